/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kt.h - the object model of ktcpvs.ko, its locking rules, and what the
 * parts of the module provide to each other.  The data path's own types
 * (struct kt_conn and its states) are in kt_conn.h.
 *
 * Object model
 * ------------
 * struct kt_net       per network namespace: the running configuration
 *                     (RCU pointer), listeners, live connections, the
 *                     per-source table, and the count of everything that
 *                     holds a socket of the namespace.
 * struct kt_config    one applied configuration: the validated blob l7ctl
 *                     compiled (services, pools, servers, rule tables) and
 *                     the runtime objects built from it.  Immutable once
 *                     published but for server weight/state and scheduler
 *                     state; freed when the last user lets go (percpu_ref)
 *                     after an RCU grace period.
 * struct kt_stats     counters of a service, pool or server; refcounted and
 *                     carried from one configuration to the next when the
 *                     object keeps its identity (service and pool by name,
 *                     server by pool, address and port), like IPVS dests.
 * struct kt_listener  a listening socket; survives a configuration swap
 *                     when the new configuration listens on the same
 *                     address.
 * struct kt_conn      a client connection and its current backend
 *                     connection (kt_conn.h).
 * struct kt_idle      a parked backend connection any client may reuse.
 * struct kt_check     a checked server's active health check: a delayed
 *                     work on kt_check_wq and, while a check runs, its
 *                     socket; belongs to a configuration, started when it
 *                     becomes the running one and stopped (synchronously)
 *                     when it is replaced (kt_check.c).
 *
 * Locking
 * -------
 * Locks, outermost first; a lock is only ever taken while holding locks
 * above it in this list, never the other way round:
 *
 *   1. genl_mutex          the genetlink core, around every doit/dumpit (the
 *                          family is not parallel_ops)
 *   2. kt_net->lock        mutex, per namespace: configuration changes,
 *                          listeners, the transaction; pernet exit
 *   2a. kt_net->log.mutex  mutex, per namespace: the access log's ring and
 *                          the order of its batches: the flush work, GET_LOG
 *                          (under genl_mutex), a commit (under ktn->lock:
 *                          the ring comes and goes with the configuration),
 *                          the module's exit (under net_rwsem, read)
 *   2b. kt_mc_sem          rwsem (kt_netlink.c): read around a multicast
 *                          from a work, GET_LOG or the module's exit (under
 *                          log.mutex), write once when the family goes
 *                          (holding nothing else); only netlink's own locks
 *                          are taken under it
 *   3. socket lock         one socket at a time: lock_sock() in process
 *                          context, taken by the socket calls
 *                          (kernel_bind/listen/accept/connect,
 *                          kernel_recvmsg/sendmsg, sock_release, shutdown)
 *                          and by the zero-copy relay, which fills a pipe
 *                          under the source's lock and sends it under the
 *                          destination's after releasing the first
 *                          (kt_pipe_fill, kt_pipe_flush); in a connection's
 *                          tasklet, the socket's spinlock (bh_lock_sock)
 *                          when no process owns the socket, for one read or
 *                          send (kt_sock_call).  Never two.
 *   4. sk_callback_lock    rwlock (BH), per socket: installing and removing
 *                          our callbacks (write); the callbacks (read).
 *                          The kernel takes it inside the socket lock; so
 *                          does a TLS handover, marking the socket ours
 *                          (kt_tls_claim).
 *   4a. a socket's wait queue lock  spinlock (IRQ): a TLS connection's
 *                          watch (kt_conn_wake runs under it and only
 *                          queues work; added and removed holding nothing)
 *   5. kt_net->conns_lock  spinlock (BH): the list of connections and the
 *                          count of namespace objects
 *      kt_net->listen_lock spinlock (BH): listeners waiting for room under
 *                          the namespace's connection limit
 *      kt_srctab->lock     spinlock (BH): the per-source table
 *      kt_pool->lock       spinlock (BH): wrr, lblc and lblcr state
 *      kt_server->idle_lock spinlock (BH): a server's idle connections
 *      kt_net->log.lock    spinlock (BH): the access log's batch; taken by
 *                          kt_log_submit() from the connection's work or
 *                          tasklet, where an exchange ends, holding no
 *                          other lock
 *   Locks of level 5 are never held together.  queue_work(),
 *   queue_delayed_work() and mod_timer() take workqueue and timer
 *   internals below all of these (under levels 4 and 5).
 *
 * Contexts:
 * - Socket callbacks (kt_sk_event and friends) run in softirq, or in
 *   process context from release_sock() of whoever owns the socket (often
 *   our own work).  They only read sk_user_data under sk_callback_lock and
 *   kick the connection -- its tasklet from softirq, else its work
 *   (kt_conn_kick): they never touch a connection's state.
 * - A connection's state has no lock: once it is published only its
 *   tasklet (softirq, holding no socket lock when it starts) and its work
 *   item (process context) touch it, and the KT_CF_RUN bit keeps them from
 *   running at once (kt_conn_claim); neither runs concurrently with itself.
 *   Steps in the tasklet never sleep: what needs process context defers to
 *   the work (kt_io_defer).  Before publication only the accept work
 *   touches it; after kt_conn_close() only its release work does, after
 *   killing the tasklet and cancelling the work.
 * - A health check's work touches its server's check fields only (the
 *   schedulers and dumps read them with READ_ONCE) and takes no lock of
 *   the module but kt_mc_sem (read) to notify.
 * - Work items never take genl_mutex or kt_net->lock.  Paths that hold
 *   them wait for works (cancel_work_sync of a listener's accept work,
 *   cancel_delayed_work_sync of idle entries, flush of the namespace's
 *   objects at exit): that is deadlock-free only because of this rule.
 * - The running configuration is read under RCU and referenced
 *   (kt_config_tryget) for the length of a request.
 */
#ifndef KT_H
#define KT_H

#include <linux/in.h>
#include <linux/in6.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/memcontrol.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/percpu-refcount.h>
#include <linux/refcount.h>
#include <linux/skbuff.h>
#include <linux/socket.h>
#include <linux/spinlock.h>
#include <linux/timer.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <net/genetlink.h>
#include <net/sock.h>

#include "compat.h"
#include "core/http.h"
#include "core/match.h"

#define KTCPVS_VERSION	"0.3.0"

/* ---- allocation accounting (kt_main.c) ------------------------------------ */

/*
 * Every allocation of the module in process context: charged to the memory
 * cgroup of whoever applied the configuration (or the caller of a netlink
 * command), and allowed to fail -- never to wake the OOM killer, in the
 * cgroup or globally: a configuration that does not fit is refused with
 * ENOMEM, a connection that does not fit is closed or answered 503.
 */
#define KT_GFP	(GFP_KERNEL_ACCOUNT | __GFP_RETRY_MAYFAIL | __GFP_NOWARN)

/*
 * The same in the data path's softirq run (kt_conn_tasklet): no sleeping,
 * no reserves.  A step that cannot get its memory this way hands the
 * connection to its work item instead of failing it (kt_io_defer).
 */
#define KT_GFP_ATOMIC	(GFP_NOWAIT | __GFP_ACCOUNT | __GFP_NOWARN)

static inline gfp_t kt_gfp(void)
{
	return in_task() ? KT_GFP : KT_GFP_ATOMIC;
}

/* kt_main.c: serve connections from their socket callbacks (softirq) */
extern bool kt_fastpath;

/*
 * Outstanding allocations of the module -- connections, buffers, skbs in
 * pipes, counters, configurations -- per CPU, summed for the leak checks
 * (KTCPVS_A_ALLOCS, and at unload).
 */
DECLARE_PER_CPU(int, kt_allocs);
#define kt_alloc_inc()	this_cpu_inc(kt_allocs)
#define kt_alloc_dec()	this_cpu_dec(kt_allocs)
int kt_allocs_sum(void);

void *kt_alloc(size_t size);	/* kvmalloc'ed, zeroed, charged to the memcg */
void kt_free(void *p);

extern struct workqueue_struct *kt_wq;

/* ---- counters (kt_stats.c) ------------------------------------------------ */

/* Errors by kind (KT_E_*), in the order of uapi's KTCPVS_ERR_NAMES. */
enum {
	KT_E_PARSE,		/* 400/414/431/501/505 from the parser */
	KT_E_HEADER_TIMEOUT,	/* 408 */
	KT_E_BLOCKED,		/* block rule */
	KT_E_REDIRECT,		/* redirect rule (not an error, counted) */
	KT_E_NO_ROUTE,		/* no rule matched: 404 */
	KT_E_UNAVAILABLE,	/* pool empty or all servers down: 503 */
	KT_E_CONNECT,		/* backend refused or unreachable */
	KT_E_BAD_GATEWAY,	/* 502 sent: no server reachable, bad response */
	KT_E_BACKEND_TIMEOUT,	/* 504 or response stalled */
	KT_E_BACKEND_RESET,	/* backend closed or reset mid-response */
	KT_E_CLIENT_RESET,	/* client closed or reset mid-request */
	KT_E_LIMIT,		/* service connection limit reached: 503 */
	KT_E_SOURCE_LIMIT,	/* per-source connections or rate: 429 */
	KT_E_RETRY,		/* request resent on a new backend connection */
	KT_E_LOCAL,		/* the switch ran out of memory or ports */
	KT_E_ANSWERED,		/* answered by an answer rule (not an error, counted) */
	KT_E_MISDIRECTED,	/* a TLS request for a host not of its certificate: 421 */
	KT_E_MAX
};

struct kt_pcpu_stats {
	u64 conns;		/* connections (services), backend connections (servers) */
	u64 requests;
	u64 bytes_in;		/* client to backend */
	u64 bytes_out;		/* backend to client */
	u64 spliced;		/* of those, relayed as skbs (zero-copy) */
	u64 errors[KT_E_MAX];
};

struct kt_stats {
	refcount_t ref;
	atomic_t active;	/* connections now (lc/wlc use the server's) */
	struct kt_pcpu_stats __percpu *pc;
};

#define kt_stat_add(st, field, n)	this_cpu_add((st)->pc->field, (n))
#define kt_stat_inc(st, field)		this_cpu_inc((st)->pc->field)

struct kt_stats *kt_stats_new(void);
struct kt_stats *kt_stats_carry(struct kt_stats *old);
void kt_stats_put(struct kt_stats *st);
void kt_stats_sum(const struct kt_stats *st, struct kt_pcpu_stats *sum);

/* ---- addresses (kt_config.c) ----------------------------------------------- */

/*
 * An IPv4 or IPv6 socket address, as the module keeps one: a service's, a
 * server's, a listener's, both ends of a client connection.  28 bytes
 * where a sockaddr_storage takes 128 (every kt_conn holds two).  Large
 * enough for what the inet families' getname writes (sockaddr_in6).
 */
union kt_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* ---- configuration objects (kt_config.c) ------------------------------------ */

struct kt_check;

struct kt_server {
	union kt_addr addr;
	int addrlen;
	u16 port;
	u16 weight;		/* READ_ONCE: runtime changes */
	u8 state;		/* KT_SERVER_*, READ_ONCE */
	u32 pool;		/* index of its pool */
	u32 key;		/* hash of its address: rendezvous hashing */
	struct kt_stats *st;
	/* passive failure marking (as nginx max_fails / fail_timeout) */
	atomic_t fails;
	unsigned long fail_start;	/* jiffies of the first failure counted */
	unsigned long down_until;	/* jiffies; skipped before this */
	int wrr_current;	/* smooth weighted round robin, under pool lock */
	/* idle backend connections any client connection may reuse */
	spinlock_t idle_lock;
	struct list_head idle;	/* struct kt_idle, under idle_lock */
	u32 nidle;		/* under idle_lock */
	bool idle_closed;	/* retired configuration: park no more */
	/* active health check (kt_check.c), if its pool has one */
	u64 id;			/* persistence identity (the compiler's) */
	struct kt_check *check;	/* or NULL */
	u8 check_state;		/* KTCPVS_CHECK_*, READ_ONCE */
	u32 check_last;		/* last result: HTTP status or KT_CK_* */
	u32 check_changes;	/* times the check changed check_state */
	struct kt_server *carried;	/* build to commit: the old server */
};

#define KT_LBLC_SETS_MAX 256	/* lblc/lblcr table: at most this many sets of ... */
#define KT_LBLC_WAYS	4	/* ... keys each, least recently used goes */
#define KT_LBLCR_SET	4

struct kt_lblc_entry {
	u32 key;		/* hash of host and path | 1, 0 = empty */
	u8 n;			/* servers in the set (lblc: 1) */
	u16 srv[KT_LBLCR_SET];	/* indices into the pool */
	unsigned long last;	/* jiffies of last use */
	unsigned long grown;	/* jiffies of last change of the set */
};

/* A client address remembered by `persist source` (kt_persist.c). */
#define KT_PSRC_SETS	4096	/* per pool: 16,384 clients, 512 KiB */
#define KT_PSRC_WAYS	4

struct kt_psrc {
	u32 key;		/* hash of the address | 1, 0 = empty */
	u16 srv;		/* index into the pool */
	u8 family;		/* KT_MATCH_AF_* */
	u8 addr[16];
	unsigned long last;	/* jiffies of last use */
};

/* A server of a `persist cookie` pool by its id (kt_persist.c), sorted by id. */
struct kt_pool_id {
	u64 id;
	u32 idx;		/* index into the pool */
};

struct kt_pool {
	const char *name;	/* into the blob */
	u32 name_len;
	u32 sched;		/* enum kt_rules_sched */
	u32 nservers;
	struct kt_server *servers;	/* into config->servers */
	struct kt_stats *st;
	atomic_t rr;		/* rr position */
	spinlock_t lock;	/* wrr, lblc and lblcr state */
	struct kt_lblc_entry *lblc;	/* lblc/lblcr with servers: nsets * WAYS */
	u32 nsets;
	struct kt_rules_check check;	/* kind KT_CHECK_NONE: none */
	struct kt_rules_persist persist;	/* kind KT_PERSIST_NONE: none */
	struct kt_psrc *psrc;	/* persist source: SETS * WAYS, under lock */
	struct kt_pool_id *ids;	/* persist cookie: nservers, by id */
	unsigned long psrc_timeout;	/* persist source: jiffies */
};

struct kt_service {
	const char *name;	/* into the blob */
	u32 name_len;
	u32 idx;		/* index in the blob */
	union kt_addr addr;
	int addrlen;
	u32 flags;		/* KT_SERVICE_* */
	struct kt_http_limits lim;
	u32 max_conns;		/* 0: unlimited */
	u32 src_conns;		/* per client address, 0: unlimited */
	u32 src_rate;		/* requests/s per client address, 0: unlimited */
	u32 backlog;
	unsigned long t_header, t_idle, t_connect, t_backend;	/* jiffies */
	u32 log_mode;		/* KT_LOG_*: its requests' access log */
	u32 log_sample;		/* KT_LOG_SAMPLE: one request in this many */
	struct kt_stats *st;
	struct kt_listener *listener;	/* set at commit, under ktn->lock */
};

/*
 * What parsing and matching one request needs, one per possible CPU, used
 * with BHs off (kt_scratch_get): a head is parsed into it and routed
 * in one go, so no connection holds a parse context.
 */
struct kt_scratch {
	u32 *match;			/* kt_match_scratch_words() */
	struct kt_http_field *fields;	/* max_fields */
	struct kt_match_header *mh;	/* max_fields */
	u8 *out;			/* out_cap: path and host */
};

struct kt_config {
	struct percpu_ref ref;
	struct rcu_head rcu;
	struct kt_net *ktn;
	u64 generation;
	char source[256];	/* the rules file it was compiled from */
	void *blob;		/* kt_alloc'ed, validated */
	size_t len;
	struct kt_rules rules;
	u32 nservices, npools, nservers;
	struct kt_service *svc;
	struct kt_pool *pools;
	struct kt_server *servers;
	u32 *svc_hash;		/* nsvc_hash slots: service index + 1, 0 empty */
	u32 nsvc_hash;
	u32 max_conns;		/* namespace-wide client connections */
	u32 scratch_words;		/* kt_match_scratch_words() */
	u32 max_fields, out_cap;	/* sizes of the parse scratch */
	struct kt_scratch *scratch;	/* nr_cpu_ids */
	struct mem_cgroup *memcg;	/* of who applied it: charged for it */
	struct kt_check *checks;	/* nchecks: one per checked server */
	u32 nchecks;
	bool checks_live;	/* started, not stopped (under ktn->lock) */
};

struct kt_net;

struct kt_listener {
	struct list_head node;		/* ktn->listeners, under ktn->lock */
	struct list_head wait_node;	/* ktn->listen_wait, under listen_lock */
	struct kt_net *ktn;
	struct socket *sock;
	union kt_addr addr;
	int addrlen;
	struct work_struct accept_work;
	void (*saved_data_ready)(struct sock *sk);
	u32 backlog;
	bool keep;			/* mark during a commit */
	bool closing;			/* under listen_lock */
};

/* Pending configuration transaction (begin, chunks, commit). */
struct kt_txn {
	u32 id;
	u32 portid;		/* netlink port that began it */
	void *buf;
	u32 size, filled;
	unsigned long started;	/* jiffies */
	char source[256];
};

struct kt_srctab;

/* ---- access log (kt_log.c) ------------------------------------------------- */

/* The strings of an access log record, as the data path has them. */
struct kt_log_strings {
	struct kt_match_slice service, pool, host, path;
	struct kt_match_slice method;	/* an extension method's name, or empty */
};

/* A namespace's access log: the batch being filled, full ones, the ring. */
struct kt_log {
	struct kt_net *ktn;
	spinlock_t lock;		/* level 5: batch, started, ready, dead */
	struct sk_buff *batch;		/* being filled, or NULL */
	unsigned long started;		/* jiffies of the batch's first record */
	struct sk_buff_head ready;	/* full batches (its own lock unused) */
	bool dead;			/* the namespace is going: take nothing */
	bool keep;			/* READ_ONCE: keep a ring (the config logs) */
	atomic64_t dropped;		/* records that never reached a reader */
	struct delayed_work flush;	/* sends batches: full, or KT_LOG_AGE old */
	struct mutex mutex;		/* level 2a: the ring, the order of batches */
	struct kt_log_ring *ring;	/* under mutex; while the config logs */
};

struct kt_net {
	struct net *net;
	struct mutex lock;		/* configuration changes, listeners */
	struct kt_config __rcu *cfg;	/* running configuration, or NULL */
	u64 generation;			/* under lock */
	struct list_head listeners;	/* under lock */
	struct kt_txn *txn;		/* under lock; kt_nl_release peeks */
	u32 next_txn_id;		/* under lock */

	spinlock_t conns_lock;
	struct list_head conns;		/* under conns_lock */
	atomic_t nconns;		/* client connections */
	/*
	 * Everything that holds a socket of this namespace (connections,
	 * idle backend connections); the exit waits for it to drop to 0.
	 * Changed and tested under conns_lock only, so that the waker is done
	 * with kt_net once the waiter sees 0.
	 */
	u32 nobjs;
	wait_queue_head_t objs_wait;
	bool dying;			/* no new objects (under conns_lock) */
	u32 max_conns;			/* READ_ONCE: the running config's */

	spinlock_t listen_lock;
	struct list_head listen_wait;	/* listeners paused at max_conns */

	struct kt_srctab *srctab;	/* per-source limits */
	struct kt_log log;		/* access log (kt_log.c) */
};

struct kt_net *kt_net(const struct net *net);

/* kt_config.c */
struct kt_config *kt_config_build(void *blob, size_t len, struct kt_config *old,
				  struct netlink_ext_ack *extack);
int kt_config_commit(struct kt_net *ktn, struct kt_config *cfg,
		     const char *source, struct netlink_ext_ack *extack);
/* kt_tls.c: client connections with kernel TLS, from their acceptor */
#define KT_TLS_NAMES_MAX	4096	/* bytes of a certificate's names */
int kt_tls_adopt(struct kt_net *ktn, int fd, const union kt_addr *la,
		 const struct nlattr *names, struct netlink_ext_ack *extack);
bool kt_tls_host_ok(const char *names, u32 len, const u8 *host, u32 hlen);

struct kt_config *kt_config_tryget(struct kt_net *ktn);
void kt_config_put(struct kt_config *cfg);
struct kt_service *kt_config_service(struct kt_config *cfg,
				     const union kt_addr *la);
struct kt_scratch *kt_scratch_get(struct kt_config *cfg);
void kt_scratch_put(void);
int kt_sockaddr(union kt_addr *ss, u8 family, const u8 *addr,
		u16 port);
bool kt_addr_equal(const union kt_addr *a, const union kt_addr *b);
u32 kt_addr_hash(const union kt_addr *a);
void kt_addr_bytes(const union kt_addr *a, u8 *family, u8 addr[16]);

/* kt_listen.c */
int kt_listener_open(struct kt_net *ktn, struct kt_service *svc,
		     struct netlink_ext_ack *extack);
void kt_listener_update(struct kt_listener *l, const struct kt_service *svc);
void kt_listener_close(struct kt_listener *l);
void kt_listeners_start(struct kt_net *ktn);
void kt_listeners_kick(struct kt_net *ktn);

/* kt_sched.c */
struct kt_sched_in {
	u32 client_hash;	/* hash of the client address */
	u32 dest_hash;		/* hash of host and path */
	const u32 *tried;	/* indices into the pool already tried */
	u32 ntried;
	u64 cookie_id;		/* persist cookie: the server it names, or 0 */
	u8 family;		/* the client's address (KT_MATCH_AF_*) */
	u8 addr[16];
};

int kt_schedule(struct kt_pool *p, const struct kt_sched_in *in);
bool kt_sched_usable(const struct kt_pool *p, u32 i,
		     const struct kt_sched_in *in, unsigned long now);
bool kt_sched_uses_dest(const struct kt_pool *p);
void kt_server_failed(struct kt_server *s);
void kt_server_ok(struct kt_server *s);

/* kt_persist.c: persistence (cookie, source) */
int kt_persist_pick(struct kt_pool *p, const struct kt_sched_in *in,
		    unsigned long now);
void kt_persist_note(struct kt_pool *p, const struct kt_sched_in *in, u32 i,
		     unsigned long now);
int kt_pool_server_by_id(const struct kt_pool *p, u64 id);
size_t kt_persist_cost(const struct kt_rules_pool_info *pi);
int kt_persist_init(struct kt_pool *p, const struct kt_rules_pool_info *pi);
void kt_persist_free(struct kt_pool *p);
u64 kt_persist_cookie(const struct kt_pool *p, const u8 *b,
		      const struct kt_http_field *fields, u32 nfields);

/*
 * kt_check.c: active health checks.  A check's result: an HTTP status
 * (100..599), or one of these.
 */
enum {
	KT_CK_NONE = 0,		/* no check done yet */
	KT_CK_CONNECTED = 1000,	/* TCP check: the connect completed */
	KT_CK_REFUSED,
	KT_CK_RESET,
	KT_CK_TIMEOUT,
	KT_CK_UNREACHABLE,
	KT_CK_CLOSED,		/* closed before answering */
	KT_CK_BAD_ANSWER,	/* no HTTP status line */
	KT_CK_ERROR,		/* the switch's own: memory, sockets */
};

/* an HTTP check's request: line, Host, User-Agent, Connection */
#define KT_CHECK_REQ_MAX	(KT_RULES_CHECK_REQUEST_MAX + \
				 KT_RULES_CHECK_HOST_MAX + 128)

struct kt_check {
	struct delayed_work work;	/* one check, which queues the next */
	struct kt_net *ktn;		/* set by kt_checks_start() */
	struct kt_pool *pool;		/* pool->check says what to do */
	struct kt_server *srv;
	wait_queue_head_t wq;		/* socket events and a stop wake it */
	bool stopping;			/* WRITE_ONCE by kt_checks_stop() */
	u8 ok_run, fail_run;		/* passes, failures in a row */
	char *req;			/* HTTP: the request, or NULL */
	u32 req_len;
};

extern struct workqueue_struct *kt_check_wq;
int kt_check_init(struct kt_check *ck, struct kt_config *cfg,
		  struct kt_pool *p, struct kt_server *s);
void kt_check_free(struct kt_check *ck);
void kt_checks_start(struct kt_config *cfg);
void kt_checks_stop(struct kt_config *cfg);
void kt_check_result_name(u32 res, char *buf, size_t len);
int kt_check_wq_init(void);
void kt_check_wq_exit(void);

/* kt_netlink.c */
enum { KT_MCGRP_CONFIG, KT_MCGRP_LOG };	/* the family's multicast groups */
int kt_netlink_init(void);
void kt_netlink_exit(void);
void kt_txn_free(struct kt_net *ktn);
void *kt_genl_put(struct sk_buff *skb, u32 portid, u32 seq, int flags, u8 cmd);
int kt_multicast(struct net *net, struct sk_buff *skb, unsigned int group);
bool kt_log_listened(struct net *net);
void kt_notify_check(struct kt_net *ktn, const struct kt_pool *p,
		     const struct kt_server *s);

/*
 * kt_log.c: the access log's transport.  The data path (kt_access.c) calls
 * kt_log_active() and, when it is true, kt_log_submit() once per exchange
 * (process or softirq context, never under another level-5 lock: the
 * connection's work or tasklet); kt_log_drop() counts a record it could not
 * build.  The rest is for the namespace's life (kt_main.c), its
 * configuration (kt_config.c: kt_log_prepare() before a commit's swap,
 * kt_log_config() at it, both under ktn->lock) and KTCPVS_CMD_GET_LOG /
 * GET_INFO (kt_netlink.c).
 */
struct ktcpvs_log_rec;
bool kt_log_active(struct kt_net *ktn);
void kt_log_submit(struct kt_net *ktn, const struct ktcpvs_log_rec *rec,
		   const struct kt_log_strings *s);
int kt_log_prepare(struct kt_net *ktn, const struct kt_config *cfg);
void kt_log_config(struct kt_net *ktn, const struct kt_config *cfg);
void kt_log_drop(struct kt_net *ktn);
u64 kt_log_dropped(struct kt_net *ktn);
int kt_log_dump(struct sk_buff *skb, struct netlink_callback *cb);
void kt_log_init(struct kt_net *ktn);
void kt_log_flush_all(void);
void kt_log_exit(struct kt_net *ktn);

/* kt_main.c: namespace objects (connections, idle entries) */
bool kt_net_obj_get(struct kt_net *ktn);
void kt_net_obj_put(struct kt_net *ktn);

#endif /* KT_H */

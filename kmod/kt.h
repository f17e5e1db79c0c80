/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kt.h - types shared by the parts of ktcpvs.ko (one translation unit:
 * ktcpvs.c includes kt_sched.c, kt_conn.c and kt_config.c after this).
 *
 * Object model
 * ------------
 * struct kt_net       per network namespace: the running configuration
 *                     (RCU pointer), listeners, live connections.
 * struct kt_config    one applied configuration: the validated blob l7ctl
 *                     compiled (services, pools, servers, rule tables) and
 *                     the runtime objects built from it.  Immutable once
 *                     published but for server weight/state and scheduler
 *                     state; freed when the last connection using it lets
 *                     go (refcount) after an RCU grace period.
 * struct kt_stats     counters of a service, pool or server; refcounted and
 *                     carried from one configuration to the next when the
 *                     object keeps its identity (service and pool by name,
 *                     server by pool, address and port), like IPVS dests.
 * struct kt_listener  a listening socket; survives a configuration swap
 *                     when the new configuration listens on the same
 *                     address.
 * struct kt_conn      a client connection and its current backend.
 *
 * Connections re-read the configuration for every request: a keep-alive
 * connection routes its next request with the newest rules.
 */
#ifndef KT_H
#define KT_H

#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/refcount.h>
#include <linux/socket.h>
#include <linux/spinlock.h>
#include <linux/timer.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <net/sock.h>

#include "core/http.h"
#include "core/match.h"

/* Counters; errors by kind (KT_E_*). */
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
	KT_E_LIMIT,		/* connection limit reached */
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

struct kt_server {
	struct sockaddr_storage addr;
	int addrlen;
	u16 port;
	u16 weight;		/* READ_ONCE: runtime changes */
	u8 state;		/* KT_SERVER_*, READ_ONCE */
	u32 pool;		/* index of its pool */
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
};

#define KT_LBLC_SETS	256	/* lblc/lblcr table: sets of ... */
#define KT_LBLC_WAYS	4	/* ... keys each, least recently used goes */
#define KT_LBLCR_SET	4

struct kt_lblc_entry {
	u32 key;		/* hash of host and path | 1, 0 = empty */
	u8 n;			/* servers in the set (lblc: 1) */
	u16 srv[KT_LBLCR_SET];	/* indices into the pool */
	unsigned long last;	/* jiffies of last use */
	unsigned long grown;	/* jiffies of last change of the set */
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
	struct kt_lblc_entry *lblc;	/* KT_LBLC_SETS * KT_LBLC_WAYS, lblc/lblcr */
};

struct kt_service {
	const char *name;	/* into the blob */
	u32 name_len;
	u32 idx;		/* index in the blob */
	struct sockaddr_storage addr;
	int addrlen;
	u32 flags;		/* KT_SERVICE_* */
	struct kt_http_limits lim;
	u32 max_conns;		/* 0: unlimited */
	unsigned long t_header, t_idle, t_connect, t_backend;	/* jiffies */
	struct kt_stats *st;
};

struct kt_config {
	refcount_t ref;
	struct rcu_head rcu;
	u64 generation;
	char source[256];	/* the rules file it was compiled from */
	void *blob;		/* kvmalloc'ed, validated */
	size_t len;
	struct kt_rules rules;
	u32 nservices, npools, nservers;
	struct kt_service *svc;
	struct kt_pool *pools;
	struct kt_server *servers;
	u32 scratch_words;
	/*
	 * kt_match() scratch, one per possible CPU, used with preemption off.
	 * Not a percpu allocation: large rule sets need more than the 32 KiB
	 * a percpu allocation may have.
	 */
	u32 **scratch;
};

struct kt_net;

struct kt_listener {
	struct list_head node;		/* ktn->listeners, under ktn->lock */
	struct kt_net *ktn;
	struct socket *sock;
	struct sockaddr_storage addr;
	int addrlen;
	struct work_struct accept_work;
	void (*saved_data_ready)(struct sock *sk);
	bool keep;			/* mark during a commit */
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

struct kt_net {
	struct net *net;
	struct mutex lock;		/* configuration changes, listeners */
	struct kt_config __rcu *cfg;	/* running configuration, or NULL */
	u64 generation;			/* under lock */
	struct list_head listeners;	/* under lock */
	struct kt_txn *txn;		/* under lock */
	u32 next_txn_id;		/* under lock */

	spinlock_t conns_lock;		/* the conns list */
	struct list_head conns;
	atomic_t nconns;
	wait_queue_head_t conns_wait;	/* woken when nconns drops to 0 */
	bool dying;			/* no new connections (under conns_lock) */
};

#endif /* KT_H */

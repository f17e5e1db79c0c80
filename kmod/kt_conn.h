/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kt_conn.h - the data path: one client connection and its backend
 * connection, from accept to close.  Locking and contexts: kt.h.
 *
 * The life of a request
 * ---------------------
 * accept     kt_accept_work (kt_listen.c): namespace, service and source
 *            limits, then kt_conn_new (kt_conn.c): the connection is set
 *            up completely, then published: callbacks installed and its
 *            work queued in one step under sk_callback_lock.
 *            Or a TLS client connection, handshaken in user space and
 *            handed over with kernel TLS on it (kt_tls_adopt, kt_tls.c,
 *            docs/tls.md): checked, the same limits, then kt_conn_adopt.
 * events     a socket callback (kt_sk_event, kt_io.c) kicks the
 *            connection (kt_conn_kick, kt_conn.c; a TLS connection's
 *            wait queue entry, kt_conn_wake, its work): from softirq its
 *            tasklet, kt_conn_tasklet, runs the steps at once; a step that
 *            needs process context (a connect, a shutdown, a socket a
 *            process owns, memory that needs reclaim) stops with
 *            kt_io_defer and the work, kt_conn_work, runs the steps from
 *            there, with timeouts and kills.  Either runs steps until none
 *            makes progress or its budget is spent: kt_conn_step ->
 *            kt_step_request and kt_step_response.
 * request    RQ_HEAD  kt_rq_head (kt_request.c): read, parse incrementally;
 *                     at the end of the head kt_route: match the rules,
 *                     plan the head's edits (X-Forwarded-For, a lone
 *                     Connection: close), then kt_backend_pick
 *                     (kt_backend.c): schedule a server, reuse a kept or
 *                     idle connection to it (kt_bconn.c) or connect.
 *            RQ_SEND  kt_rq_send: the head goes out.
 *            RQ_BODY  kt_rq_body: the body by its framing (kt_dir_step,
 *                     kt_relay.c): buffered bytes are sent, opaque body
 *                     bytes pass zero-copy through the pipe.
 *            RQ_DONE  the request is forwarded.
 * response   RS_CONNECT kt_rs_connect (kt_response.c): the connect ends.
 *            RS_HEAD  kt_rs_head: read and parse the head; 1xx are
 *                     forwarded; kt_rs_head_done: a tunnel if asked for,
 *                     Connection: close if the client closes, and the head
 *                     with the body bytes that came with it goes out in
 *                     one send (a longer Content-Length body: its first
 *                     bytes are in the pipe, read with the head,
 *                     kt_rs_read_head).
 *            RS_BODY  kt_rs_body: the body by its framing (kt_dir_step).
 *            kt_exchange_done: the next request (RQ_HEAD, RS_IDLE), the
 *            backend connection kept; or kt_conn_linger.
 * answers    kt_conn_answer (kt_answer.c): the switch's own answer (CS_ANSWER),
 *            then a lingering close (CS_LINGER).
 * end        kt_conn_close: callbacks removed, timer stopped, then
 *            kt_conn_release (its own work) frees everything.
 *
 * States and what holds in them (kt_conn_check() tests these with
 * WARN_ON_ONCE after every step):
 *   cs == CS_OPEN:
 *     rq == RQ_HEAD  <=>  rs == RS_IDLE     (between requests)
 *     rs == RS_IDLE   =>  srv == NULL, up and down pipes empty, down.len == 0
 *     rq in {SEND, BODY, TUNNEL} or rs != RS_IDLE  =>  b != NULL, srv,
 *                        pool, svc and cfg set
 *     rq == RQ_TUNNEL  =>  rs == RS_TUNNEL, or RS_CONNECT (a raw service)
 *     rs == RS_TUNNEL  =>  rq in {RQ_TUNNEL, RQ_DONE}
 *     up.pipe non-empty   => rq in {BODY, TUNNEL}; not holding for a retry
 *     down.pipe non-empty => rs in {BODY, TUNNEL}
 *     hold (request kept for a retry) => no response byte yet
 *   cs in {CS_ANSWER, CS_LINGER}:
 *     b == NULL, srv == NULL, both pipes empty, no buffers;
 *     CS_ANSWER: ebuf set
 *   cs == CS_CLOSED: no step runs again.
 *   srv is the server the current request is scheduled on (its active
 *   count includes this request); b->srv the server the backend
 *   connection goes to.  They differ only between requests, while a kept
 *   connection waits.
 */
#ifndef KT_CONN_H
#define KT_CONN_H

#include <linux/interrupt.h>
#include <linux/skbuff.h>
#include <linux/wait.h>
#include <net/inet_connection_sock.h>

#include "kt.h"
#include "uapi/ktcpvs.h"

#define KT_BUF_PAGE		PAGE_SIZE	/* first buffer of a direction */
#define KT_PIPE_BYTES		(256 * 1024)	/* zero-copy relay, per direction */
#define KT_PIPE_SKBS		64
#define KT_FRAMING_READ		128	/* chunk lines: read little, splice data */
#define KT_BUDGET		64	/* steps per work run */
#define KT_BUDGET_SOFTIRQ	16	/* steps per tasklet run, then the work */
#define KT_MAX_TRIES		3	/* servers tried per request */
#define KT_LINGER		(2 * HZ)
#define KT_PARK_DELAY		HZ	/* idle client: its backend goes to the pool */

enum kt_cs { KT_CS_OPEN, KT_CS_ANSWER, KT_CS_LINGER, KT_CS_CLOSED };
enum kt_rq { KT_RQ_HEAD, KT_RQ_SEND, KT_RQ_BODY, KT_RQ_DONE, KT_RQ_TUNNEL };
enum kt_rs { KT_RS_IDLE, KT_RS_CONNECT, KT_RS_HEAD, KT_RS_BODY, KT_RS_TUNNEL };

/* What a step did. */
enum kt_step { KT_BLOCKED, KT_PROGRESS };

/* What an I/O helper of one direction did (kt_relay.c). */
enum kt_io {
	KT_IO_MOVED,	/* bytes moved (or were classified): progress */
	KT_IO_AGAIN,	/* nothing to do until an event */
	KT_IO_DONE,	/* the message is complete and sent */
	KT_IO_SRC_EOF,	/* the source closed (FIN) */
	KT_IO_SRC_ERR,	/* reading the source failed (reset, no memory) */
	KT_IO_DST_ERR,	/* sending to the destination failed */
	KT_IO_BAD,	/* the body's framing is invalid (body.status) */
};

/* c->flags bits, set from other contexts */
#define KT_CF_KILL	0
#define KT_CF_TIMER	1
#define KT_CF_RUN	2	/* the work or the tasklet runs the steps */
#define KT_CF_RERUN_WORK 3	/* the work found the tasklet running */
#define KT_CF_RERUN_FAST 4	/* the tasklet found the work running */

/*
 * Zero-copy relay of one direction: skbs cloned off the source socket's
 * receive queue (tcp_read_sock), sent on the destination from their pages
 * (skb_send_sock_locked), bounded by KT_PIPE_BYTES and KT_PIPE_SKBS and
 * refilled only once empty.
 */
struct kt_pipe {
	struct sk_buff_head q;		/* private: __skb_* helpers only */
	u32 bytes;
};

/*
 * A direction's current message: its head's parse and its body's framing.
 * Both directions' are one object (struct kt_msgs, kt_conn.c), taken when a
 * connection's request begins (kt_rq_begin) and kept across its requests
 * until it parks (kt_conn_park_idle), becomes a tunnel (kt_conn_tunnel) or
 * closes: an idle connection does not hold the 480 bytes.  Readers run
 * within a request (from kt_rq_begin to the end of its response or answer,
 * short of a tunnel), where it is always there.
 */
struct kt_msg_state {
	struct kt_http_msg msg;
	struct kt_http_body body;
};

/*
 * One direction of the exchange: up (client -> backend) or down (backend
 * -> client).  buf[0, len) holds bytes read from the source:
 *   [0, sent)    sent; kept only while the request is held for a retry
 *   [sent, fwd)  belong to the current message and go out next
 *   [fwd, len)   not looked at yet (rest of the head, body, or the next
 *                message)
 * Without a hold, bytes are dropped from the front as soon as they are
 * sent, so sent is 0 between sends.
 */
struct kt_dir {
	u8 *buf;
	u32 cap, len, fwd, sent;
	struct kt_msg_state *ms;	/* NULL until a request begins, and
					 * again once the connection parks */
	struct kt_pipe pipe;
	bool body_done;
	bool big;			/* the last splice was large (chunked) */
};

/* A socket's own callbacks, kept while ours are installed. */
struct kt_sk_saved {
	void (*data_ready)(struct sock *sk);
	void (*write_space)(struct sock *sk);
	void (*state_change)(struct sock *sk);
};

struct kt_src;
struct kt_conn;

/* A backend connection (kt_bconn.c): its socket's callbacks point here. */
struct kt_bconn {
	struct socket *sock;
	struct kt_server *srv;		/* the server it is connected to */
	struct kt_net *ktn;
	struct kt_conn __rcu *owner;	/* the client connection, NULL if parked */
	struct list_head node;		/* srv->idle while parked, under idle_lock */
	bool parked;			/* under idle_lock; READ_ONCE elsewhere */
	bool dying;			/* closed in softirq: idle_work releases */
	bool conn_auth;			/* the server authenticated the connection
					 * (NTLM, Negotiate): its client's alone,
					 * never parked; its owner's steps only
					 * (kt_response.c) */
	struct delayed_work idle_work;	/* parked: its timeout or an event closes it */
	struct kt_sk_saved saved;	/* the socket's own callbacks */
};

/*
 * The access log record of a connection's current request (kt_access.c):
 * filled in from routing on, handed to kt_log_submit() when it ends.
 * Allocated when the connection's first logged request is routed (a head
 * that never completes holds none) and kept until the client idles: no
 * allocation per request.  str[] holds the host, the path and an extension
 * method's name, captured at routing time (the head leaves the buffer once
 * it is sent).
 */
#define KT_ALOG_HOST_MAX	KT_HTTP_HOST_MAX
#define KT_ALOG_METHOD_MAX	32
#define KT_ALOG_STR_MAX		(KT_ALOG_HOST_MAX + KTCPVS_LOG_PATH_MAX + \
				 KT_ALOG_METHOD_MAX)

struct kt_alog {
	struct ktcpvs_log_rec rec;	/* lengths: of the strings in str[] */
	const struct kt_pool *pool;	/* the rule's pool, or NULL */
	u8 str[KT_ALOG_STR_MAX];
};

#define KT_ALOG_NO_HINT		0xff	/* c->alog_hint: no error counted */

struct kt_conn {
	struct list_head node;		/* ktn->conns, under conns_lock */
	struct kt_net *ktn;
	struct socket *csk;		/* the client's */
	struct kt_bconn *b;		/* the backend connection, or NULL */
	struct work_struct work;	/* steps that need process context,
					 * timeouts, kills */
	struct tasklet_struct tasklet;	/* steps from the socket callbacks */
	/*
	 * kt_conn_close() to its release: a grace period, then the release
	 * work, which the RCU callback sets up over the finished rcu_head.
	 */
	union {
		struct rcu_head rcu;
		struct work_struct release_work;
	};
	struct timer_list timer;
	unsigned long deadline;		/* timeout of the current state */
	unsigned long park_at;		/* 0, or when to park the kept backend */
	unsigned long timer_at;		/* when the timer fires, 0 if idle */
	unsigned long flags;		/* KT_CF_* */
	struct mem_cgroup *memcg;	/* charged for the connection's memory */

	union kt_addr laddr;		/* the address the client reached */
	union kt_addr peer;		/* the client */
	u32 client_hash;
	u32 dest_hash;			/* the current request's (kt_sched.c) */
	struct kt_src *src;		/* per-source entry, or NULL */
	struct kt_stats *svc_st;	/* the service's, for active conns */

	u8 cs, rq, rs;			/* enum kt_cs, kt_rq, kt_rs */
	u8 req_method;			/* enum kt_http_method */
	bool first;			/* first request of the connection */
	bool client_ka;			/* the request allows keep-alive */
	bool resp_started;		/* response bytes went to the client */
	bool parsing;			/* the request's parser is set up */
	u8 parse_calls;			/* reads of the head parsed so far */
	bool b_reused;			/* b served an earlier request */
	bool hold;			/* the request is kept for a retry */
	bool retried;			/* ... and was retried once */
	bool resend_connect;		/* the deferred connect is the retry's */
	bool counted;			/* the request was counted as forwarded */
	bool late_read;			/* head state: one read past its deadline
					 * was granted (kt_conn_timeout) */
	bool shut_wr;			/* CS_LINGER: the client's write side
					 * is still to be shut (process context) */
	u32 req_flags;			/* KT_HTTP_* of the request */

	/* the access log (kt_access.c) */
	bool alog_decided;		/* this request's log decision is made */
	bool alog_on;			/* ... and it has a record pending */
	bool alog_routed;		/* ... which alog holds (from routing on) */
	u8 alog_hint;			/* KTCPVS_END_* of the last error counted */
	u16 alog_status;		/* the status the client got, 0: none */
	u64 alog_t0;			/* ktime_get_ns() at the request's first byte */
	u64 alog_time_ns;		/* CLOCK_REALTIME then */
	struct kt_alog *alog;		/* or NULL: no request was routed yet */
	u64 rq_in, rq_out;		/* bytes from / to the client, this request */

	/* the current request */
	struct kt_config *cfg;		/* referenced */
	struct kt_service *svc;
	struct kt_pool *pool;
	struct kt_server *srv;
	u32 tried[KT_MAX_TRIES];
	u32 ntried;
	u64 persist_id;			/* persist cookie: the server named, or 0 */

	struct kt_dir up, down;

	/* an answer of the switch itself */
	char *ebuf;
	u32 elen, esent;

	struct kt_sk_saved csaved;	/* the client socket's own callbacks */

	struct kt_conn_tls *tls;	/* or NULL: a plain client socket */
};

/*
 * What a TLS client connection keeps besides a plain one, allocated by its
 * handover (kt_tls_adopt) and freed with the connection: the socket's file
 * (the socket's lifetime), and our entry on its wait queue, which kicks the
 * work as poll would be woken (wait.private: the connection); TLS keeps its
 * own callbacks, and the connection's steps run in its work only.  Then the
 * host names of its certificate from the acceptor (names_len 0: no check):
 * a request for another host is answered 421.
 */
struct kt_conn_tls {
	struct file *file;
	struct wait_queue_entry wait;
	u32 names_len;
	char names[];
};

/* kt_io.c: callbacks, socket calls, buffers */

/* TLS record types (RFC 8446 5.1) the module tells apart */
#define KT_TLS_RECORD_ALERT	21
#define KT_TLS_RECORD_DATA	23

/*
 * A client socket handed over with kernel TLS on it (kt_tls.c): the only
 * sockets of the module with an upper layer.  Set before the handover and
 * cleared only when the socket is destroyed.
 */
static inline bool kt_sk_tls(const struct sock *sk)
{
	return READ_ONCE(inet_csk(sk)->icsk_ulp_ops) != NULL;
}

/*
 * A step of the softirq run needs what only the work item can do (a socket
 * a process owns, memory that needs reclaim, a connect, a shutdown): the
 * run stops after the step and queues the work (kt_conn_tasklet).  Per
 * CPU: a tasklet runs on one CPU with BHs off from start to end.
 */
DECLARE_PER_CPU(bool, kt_deferred);

static inline void kt_io_defer(void)
{
	if (!WARN_ON_ONCE(in_task()))
		this_cpu_write(kt_deferred, true);
}

/* A socket's settings a send in softirq changes for its length. */
struct kt_tx_save {
	struct page_frag frag;
	gfp_t gfp;
	bool task_frag;
	bool room;			/* the send buffer had room */
};

void kt_sk_event(struct sock *sk);
bool kt_sk_own_close(const struct sock *sk);
void kt_sk_state_change(struct sock *sk);
void kt_sk_write_space(struct sock *sk);
void kt_sk_set(struct sock *sk, void *user, void (*dr)(struct sock *),
	       void (*ws)(struct sock *), void (*sc)(struct sock *));
void kt_sk_save(struct sock *sk, struct kt_sk_saved *saved);
void kt_sk_restore(struct sock *sk, const struct kt_sk_saved *saved);
bool kt_sk_readable(struct sock *sk);
void kt_sock_shutdown_wr(struct socket *sock);
int kt_sock_call(struct sock *sk, int (*fn)(struct sock *sk, void *arg),
		 void *arg);
void kt_tx_begin(struct sock *sk, struct kt_tx_save *save);
void kt_tx_end(struct sock *sk, struct kt_tx_save *save, int n);
int kt_read_result(struct sock *sk, int n, int error);
void kt_io_exit(void);
int kt_recv(struct socket *sock, void *buf, size_t len);
int kt_sendv(struct socket *sock, struct kvec *iov, size_t nr, size_t len,
	     bool more);
int kt_send(struct socket *sock, const void *buf, size_t len, bool more);
int kt_buf_get(struct kt_dir *d);
int kt_buf_grow(struct kt_dir *d, u32 want);
void kt_buf_put(struct kt_dir *d);
void kt_buf_drop_sent(struct kt_dir *d);

/* kt_relay.c: one direction */
void kt_pipe_init(struct kt_pipe *p);
void kt_pipe_purge(struct kt_pipe *p);
size_t kt_pipe_take(struct kt_pipe *p, struct sk_buff *skb, unsigned int off,
		    size_t len, int *error);
int kt_pipe_fill(struct kt_pipe *p, struct socket *from, u64 max);
int kt_pipe_flush(struct kt_pipe *p, struct socket *to);
int kt_pipe_flush_tls(struct kt_pipe *p, struct socket *to);
enum kt_io kt_dir_send(struct kt_conn *c, struct kt_dir *d);
enum kt_io kt_dir_step(struct kt_conn *c, struct kt_dir *d);
enum kt_io kt_dir_tunnel(struct kt_conn *c, struct kt_dir *d);
void kt_dir_reset(struct kt_dir *d);

/* kt_persist.c (and kt_response.c) */
int kt_persist_set_cookie(struct kt_conn *c);
int kt_resp_add_line(struct kt_conn *c, const char *line, u32 n);

/* kt_request.c */
void kt_conn_start_request(struct kt_conn *c);
enum kt_step kt_step_request(struct kt_conn *c);
void kt_up_release_hold(struct kt_conn *c);

/* kt_response.c */
enum kt_step kt_step_response(struct kt_conn *c);
void kt_conn_park_idle(struct kt_conn *c);
void kt_conn_tunnel(struct kt_conn *c);

/* kt_backend.c */
void kt_backend_pick(struct kt_conn *c);
void kt_backend_retry(struct kt_conn *c);
void kt_backend_connect_deferred(struct kt_conn *c);
void kt_backend_lost(struct kt_conn *c, int kind, const char *reason);
bool kt_backend_reusable(struct kt_conn *c, struct kt_server *srv);
void kt_conn_release_backend(struct kt_conn *c);
void kt_conn_drop_backend(struct kt_conn *c);

/* kt_bconn.c */
int kt_bconn_new(struct kt_conn *c, struct kt_server *srv);
void kt_bconn_close(struct kt_conn *c);
void kt_bconn_park(struct kt_conn *c);
bool kt_bconn_pop(struct kt_conn *c, struct kt_server *srv);
void kt_idle_retire(struct kt_config *cfg);

/* kt_answer.c */
void kt_conn_answer(struct kt_conn *c, unsigned int status,
		    const char *reason, const u8 *location, u32 location_len);
void kt_conn_answer_rule(struct kt_conn *c, unsigned int status,
			 const u8 *body, u32 body_len);
void kt_conn_fail(struct kt_conn *c, int kind, unsigned int status,
		  const char *reason);
void kt_conn_linger(struct kt_conn *c);
enum kt_step kt_step_answer(struct kt_conn *c);
enum kt_step kt_step_linger(struct kt_conn *c);
void kt_refuse(struct socket *sock, unsigned int status);

/* kt_access.c: the access log's data path side */
void kt_alog_begin(struct kt_conn *c);
void kt_alog_route(struct kt_conn *c, const struct kt_match_req *mr,
		   const struct kt_match_result *res);
void kt_alog_server(struct kt_conn *c, const struct kt_server *srv);
void kt_alog_mark_connect(struct kt_conn *c);
void kt_alog_mark_first_byte(struct kt_conn *c);
void kt_alog_emit(struct kt_conn *c, unsigned int end);
u8 kt_alog_end_of(int kind);
void kt_alog_free(struct kt_conn *c);

/* The request's record, if it has one, ends as @end. */
static inline void kt_alog_done(struct kt_conn *c, unsigned int end)
{
	if (c->alog_on)
		kt_alog_emit(c, end);
}

/* The end the last error counted says, or @dflt when none was counted. */
static inline unsigned int kt_alog_end_or(const struct kt_conn *c,
					  unsigned int dflt)
{
	return c->alog_hint == KT_ALOG_NO_HINT ? dflt : c->alog_hint;
}

/* The status the client gets for this request. */
static inline void kt_alog_status(struct kt_conn *c, unsigned int status)
{
	if (c->alog_on)
		c->alog_status = status;
}

/* kt_conn.c */
void kt_conn_kick(struct kt_conn *c);
void kt_conn_new(struct kt_listener *l, struct socket *sock,
		 const union kt_addr *peer, struct kt_config *cfg,
		 struct kt_service *svc, struct kt_src *src);
int kt_conn_adopt(struct kt_net *ktn, struct kt_service *svc,
		  struct kt_config *cfg, struct socket *sock,
		  const union kt_addr *peer, struct kt_src *src,
		  struct kt_conn_tls *tls);
void kt_conn_unwatch(struct kt_conn *c);

/* kt_tls.c */
void kt_tls_unclaim(struct sock *sk);
void kt_conn_close(struct kt_conn *c);
void kt_conn_end_request(struct kt_conn *c);
void kt_conn_count_error(struct kt_conn *c, int kind);
void kt_conns_kill(struct kt_net *ktn, const union kt_addr *la);
int kt_conn_cache_init(void);
void kt_conn_cache_exit(void);
int kt_conn_msgs_get(struct kt_conn *c);
void kt_conn_msgs_put(struct kt_conn *c);

/* kt_limit.c: admission, per-source limits */
int kt_src_attach(struct kt_net *ktn, const struct kt_service *svc,
		  const union kt_addr *peer, struct kt_src **out);
void kt_src_detach(struct kt_net *ktn, struct kt_src *e);
int kt_conn_admit(struct kt_net *ktn, struct kt_service *svc,
		  const union kt_addr *peer, struct kt_src **src);
bool kt_src_request(struct kt_net *ktn, struct kt_src *e,
		    const struct kt_service *svc);
int kt_srctab_init(struct kt_net *ktn);
void kt_srctab_exit(struct kt_net *ktn);

/* The backend connection's socket, or NULL. */
static inline struct socket *kt_bsk(const struct kt_conn *c)
{
	return c->b ? c->b->sock : NULL;
}

static inline struct socket *kt_dir_src(const struct kt_conn *c,
					const struct kt_dir *d)
{
	return d == &c->up ? c->csk : kt_bsk(c);
}

static inline struct socket *kt_dir_dst(const struct kt_conn *c,
					const struct kt_dir *d)
{
	return d == &c->up ? kt_bsk(c) : c->csk;
}

#endif /* KT_CONN_H */

// SPDX-License-Identifier: GPL-2.0
/*
 * kt_check.c - active health checks, in the kernel: for every server of a
 * pool with `check tcp` or `check http`, one check every interval, each
 * done within its timeout, its verdicts counted in a row (HAProxy's
 * meanings): `fall` failures take the server out of rotation (the
 * schedulers skip it, kt_sched.c), `rise` successes bring it back.
 * Passive marking (failed connects of real requests) goes on beside it.
 *
 * A check is a delayed work on kt_check_wq.  It opens a kernel socket in
 * the namespace, connects without blocking and waits on its own wait
 * queue, which the socket's callbacks and kt_checks_stop() wake; an HTTP
 * check then sends "METHOD /path HTTP/1.1" with Host and Connection:
 * close and reads the status line.  The socket is closed with a reset
 * (no TIME_WAIT left per check) and the next check queued one interval
 * after this one started.  Bounded: one socket and one work per checked
 * server, the request built once per configuration, a check never longer
 * than its timeout (<= its interval, <= 60 s: the validator's bounds).
 *
 * Life: the checks belong to a configuration.  kt_checks_start() runs when
 * it becomes the running one (kt_config_commit), carrying each server's
 * check state over from the configuration it replaces (same pool name and
 * address); kt_checks_stop() when it is replaced, flushed, or its
 * namespace exits, and returns once no check of it runs: a stop wakes a
 * waiting check at once, so that takes no longer than a socket call.  A
 * server new to the running configuration starts up, but its first failed
 * check takes it down (HAProxy's initial health): a dead server added by
 * an apply is out after one check, not `fall`.
 *
 * Context: the check work is process context and may sleep; it takes no
 * lock of the module but the socket's (and kt_mc_sem, read, to notify).
 * The socket callbacks run in softirq and only wake the wait queue.
 * kt_checks_start()/kt_checks_stop() run under ktn->lock (process).
 */

#include <linux/ctype.h>
#include <linux/jiffies.h>
#include <linux/random.h>
#include <linux/slab.h>
#include <linux/wait.h>
#include <net/inet_sock.h>
#include <net/tcp.h>

#include "kt_conn.h"

struct workqueue_struct *kt_check_wq;

/* Names of results that are not an HTTP status (KT_CK_*). */
static const char *const kt_check_names[] = {
	[KT_CK_CONNECTED - KT_CK_CONNECTED] = "connected",
	[KT_CK_REFUSED - KT_CK_CONNECTED] = "refused",
	[KT_CK_RESET - KT_CK_CONNECTED] = "reset",
	[KT_CK_TIMEOUT - KT_CK_CONNECTED] = "timeout",
	[KT_CK_UNREACHABLE - KT_CK_CONNECTED] = "unreachable",
	[KT_CK_CLOSED - KT_CK_CONNECTED] = "closed",
	[KT_CK_BAD_ANSWER - KT_CK_CONNECTED] = "bad answer",
	[KT_CK_ERROR - KT_CK_CONNECTED] = "error",
};

/* The result @res as text ("200", "refused", ...); "" for none yet. */
void kt_check_result_name(u32 res, char *buf, size_t len)
{
	if (res >= KT_CK_CONNECTED && res <= KT_CK_ERROR)
		strscpy(buf, kt_check_names[res - KT_CK_CONNECTED], len);
	else if (res)
		snprintf(buf, len, "%u", res);
	else
		strscpy(buf, "", len);
}

static u32 kt_check_errno(int err)
{
	switch (err) {
	case -ECONNREFUSED:
		return KT_CK_REFUSED;
	case -ECONNRESET:
	case -EPIPE:
	case -ECONNABORTED:
		return KT_CK_RESET;
	case -ETIMEDOUT:
	case -EAGAIN:
	case -EINPROGRESS:
		return KT_CK_TIMEOUT;
	case -EHOSTUNREACH:
	case -ENETUNREACH:
	case -EHOSTDOWN:
	case -ENETDOWN:
	case -EADDRNOTAVAIL:
		return KT_CK_UNREACHABLE;
	default:
		return KT_CK_ERROR;
	}
}

/* Every event of the check's socket: wake the check.  Softirq. */
static void kt_check_event(struct sock *sk)
{
	struct kt_check *ck;

	read_lock_bh(&sk->sk_callback_lock);
	ck = sk->sk_user_data;
	if (ck)
		wake_up(&ck->wq);
	read_unlock_bh(&sk->sk_callback_lock);
}

static long kt_check_left(unsigned long deadline)
{
	long d = (long)(deadline - jiffies);

	return d > 0 ? d : 0;
}

/*
 * Wait for @cond, a stop or @deadline; true when @cond holds.  The
 * condition is evaluated after the wait queue is armed, and the callbacks
 * and kt_checks_stop() wake it after changing what it tests.
 */
#define kt_check_wait(ck, cond, deadline)				\
	({								\
		long __left = kt_check_left(deadline);			\
		if (__left)						\
			wait_event_timeout((ck)->wq, (cond) ||		\
					   READ_ONCE((ck)->stopping),	\
					   __left);			\
		(cond);							\
	})

static bool kt_check_connecting(const struct sock *sk)
{
	int st = READ_ONCE(sk->sk_state);

	return st == TCP_SYN_SENT || st == TCP_SYN_RECV;
}

static bool kt_check_readable(const struct sock *sk)
{
	return !skb_queue_empty_lockless(&sk->sk_receive_queue) ||
	       READ_ONCE(sk->sk_err) ||
	       (READ_ONCE(sk->sk_shutdown) & RCV_SHUTDOWN) ||
	       READ_ONCE(sk->sk_state) == TCP_CLOSE;
}

/* Connect within @deadline: 0 or -errno. */
static int kt_check_connect(struct kt_check *ck, struct socket *sock,
			    unsigned long deadline)
{
	struct kt_server *s = ck->srv;
	struct sock *sk = sock->sk;
	int err, st;

	err = kernel_connect(sock, (struct sockaddr_unsized *)&s->addr,
			     s->addrlen, O_NONBLOCK);
	if (err != -EINPROGRESS)
		return err;
	if (!kt_check_wait(ck, !kt_check_connecting(sk), deadline))
		return -ETIMEDOUT;
	st = READ_ONCE(sk->sk_state);
	if (st == TCP_ESTABLISHED || st == TCP_CLOSE_WAIT)
		return 0;
	err = sock_error(sk);
	return err ? err : -ECONNRESET;
}

/* Send the request within @deadline: 0 or -errno. */
static int kt_check_send(struct kt_check *ck, struct socket *sock,
			 unsigned long deadline)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct sock *sk = sock->sk;
	u32 off = 0;
	int n;

	while (off < ck->req_len) {
		struct kvec v = { ck->req + off, ck->req_len - off };

		n = kernel_sendmsg(sock, &msg, &v, 1, v.iov_len);
		if (n > 0) {
			off += n;
			continue;
		}
		if (n != -EAGAIN)
			return n ? n : -EPIPE;
		if (!kt_check_wait(ck, sk_stream_is_writeable(sk) ||
				   READ_ONCE(sk->sk_err), deadline))
			return -ETIMEDOUT;
	}
	return 0;
}

/*
 * "HTTP/1.x NNN" at the start of @b: the status, or 0 when @b is no
 * status line.
 */
static u32 kt_check_status(const u8 *b, u32 len)
{
	u32 st;

	if (len < 13 || memcmp(b, "HTTP/1.", 7) || !isdigit(b[7]) ||
	    b[8] != ' ' || !isdigit(b[9]) || !isdigit(b[10]) ||
	    !isdigit(b[11]) || (b[12] != ' ' && b[12] != '\r'))
		return 0;
	st = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
	return st >= 100 && st <= 599 ? st : 0;
}

/* An HTTP check on the connected @sock: the status, or a KT_CK_* failure. */
static u32 kt_check_http(struct kt_check *ck, struct socket *sock,
			 unsigned long deadline)
{
	struct sock *sk = sock->sk;
	u8 buf[16];
	u32 len = 0;
	int n;

	n = kt_check_send(ck, sock, deadline);
	if (n)
		return kt_check_errno(n);
	while (len < 13) {
		struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
		struct kvec v = { buf + len, 13 - len };

		n = kernel_recvmsg(sock, &msg, &v, 1, v.iov_len, MSG_DONTWAIT);
		if (n > 0) {
			len += n;
			continue;
		}
		if (!n)
			return len ? KT_CK_BAD_ANSWER : KT_CK_CLOSED;
		if (n != -EAGAIN)
			return kt_check_errno(n);
		if (!kt_check_wait(ck, kt_check_readable(sk), deadline))
			return KT_CK_TIMEOUT;
	}
	return kt_check_status(buf, len) ?: KT_CK_BAD_ANSWER;
}

/* One check of ck's server: its result; *@pass says whether it passed. */
static u32 kt_check_run(struct kt_check *ck, bool *pass)
{
	const struct kt_rules_check *rc = &ck->pool->check;
	unsigned long deadline = jiffies + msecs_to_jiffies(rc->timeout_ms);
	struct kt_sk_saved saved;
	struct socket *sock;
	struct sock *sk;
	u32 res;
	int err;

	*pass = false;
	if (!kt_net_obj_get(ck->ktn))		/* the namespace is going */
		return KT_CK_ERROR;
	err = sock_create_kern(ck->ktn->net, ck->srv->addr.sa.sa_family,
			       SOCK_STREAM, IPPROTO_TCP, &sock);
	if (err) {
		kt_net_obj_put(ck->ktn);
		return KT_CK_ERROR;
	}
	sk = sock->sk;
	sock_no_linger(sk);	/* closed with a reset: no TIME_WAIT per check */
	kt_sk_save(sk, &saved);
	kt_sk_set(sk, ck, kt_check_event, kt_check_event, kt_check_event);

	err = kt_check_connect(ck, sock, deadline);
	if (err)
		res = kt_check_errno(err);
	else if (rc->kind == KT_CHECK_HTTP)
		res = kt_check_http(ck, sock, deadline);
	else
		res = KT_CK_CONNECTED;
	if (res == KT_CK_CONNECTED)
		*pass = true;
	else if (res < KT_CK_CONNECTED)
		*pass = res >= rc->expect_lo && res <= rc->expect_hi;

	kt_sk_restore(sk, &saved);
	sock_release(sock);
	kt_net_obj_put(ck->ktn);
	return res;
}

/* The server's check state changes to @state. */
static void kt_check_change(struct kt_check *ck, u8 state)
{
	struct kt_server *s = ck->srv;
	char last[16];

	WRITE_ONCE(s->check_state, state);
	WRITE_ONCE(s->check_changes, s->check_changes + 1);
	kt_check_result_name(s->check_last, last, sizeof(last));
	pr_info_ratelimited("pool %.*s server %pISpc %s by its check (%s)\n",
			    ck->pool->name_len, ck->pool->name, &s->addr,
			    state == KTCPVS_CHECK_UP ? "up" : "down", last);
	kt_notify_check(ck->ktn, ck->pool, s);
}

/* Count the verdict of one check (only the check's work writes these). */
static void kt_check_verdict(struct kt_check *ck, u32 res, bool pass)
{
	const struct kt_rules_check *rc = &ck->pool->check;
	struct kt_server *s = ck->srv;

	WRITE_ONCE(s->check_last, res);
	if (pass) {
		ck->fail_run = 0;
		if (ck->ok_run < U8_MAX)
			ck->ok_run++;
		if (s->check_state == KTCPVS_CHECK_DOWN && ck->ok_run >= rc->rise)
			kt_check_change(ck, KTCPVS_CHECK_UP);
	} else {
		ck->ok_run = 0;
		if (ck->fail_run < U8_MAX)
			ck->fail_run++;
		if (s->check_state == KTCPVS_CHECK_UP && ck->fail_run >= rc->fall)
			kt_check_change(ck, KTCPVS_CHECK_DOWN);
	}
}

static void kt_check_work(struct work_struct *work)
{
	struct kt_check *ck = container_of(to_delayed_work(work),
					   struct kt_check, work);
	unsigned long start = jiffies;
	long delay;
	bool pass;
	u32 res;

	if (READ_ONCE(ck->stopping))
		return;
	res = kt_check_run(ck, &pass);
	if (READ_ONCE(ck->stopping))
		return;		/* cut short: no verdict */
	kt_check_verdict(ck, res, pass);
	delay = (long)(start + msecs_to_jiffies(ck->pool->check.interval_ms) -
		       jiffies);
	queue_delayed_work(kt_check_wq, &ck->work, max(delay, 1L));
}

/*
 * Set up check @ck of server @s in pool @p of @cfg (being built): the HTTP
 * request, with the pool's Host or the server's address and port.
 * Context: process, under ktn->lock.
 */
int kt_check_init(struct kt_check *ck, struct kt_config *cfg,
		  struct kt_pool *p, struct kt_server *s)
{
	const struct kt_rules_check *rc = &p->check;
	size_t cap;
	int n;

	INIT_DELAYED_WORK(&ck->work, kt_check_work);
	init_waitqueue_head(&ck->wq);
	ck->pool = p;
	ck->srv = s;
	s->check = ck;
	s->check_state = KTCPVS_CHECK_UP;
	ck->fail_run = rc->fall - 1;	/* new: down at its first failure */
	if (rc->kind != KT_CHECK_HTTP)
		return 0;
	cap = KT_CHECK_REQ_MAX;
	ck->req = kmalloc(cap, KT_GFP);
	if (!ck->req)
		return -ENOMEM;
	kt_alloc_inc();
	if (rc->host.len)
		n = snprintf(ck->req, cap, "%.*s HTTP/1.1\r\nHost: %.*s\r\n",
			     (int)rc->request.len, rc->request.ptr,
			     (int)rc->host.len, rc->host.ptr);
	else
		n = snprintf(ck->req, cap, "%.*s HTTP/1.1\r\nHost: %pISpc\r\n",
			     (int)rc->request.len, rc->request.ptr, &s->addr);
	n += scnprintf(ck->req + n, cap - n,
		       "User-Agent: ktcpvs-check\r\nConnection: close\r\n\r\n");
	ck->req_len = n;
	return 0;
}

/* Free what kt_check_init() allocated.  The check does not run. */
void kt_check_free(struct kt_check *ck)
{
	if (ck->req) {
		kfree(ck->req);
		kt_alloc_dec();
		ck->req = NULL;
	}
}

/*
 * @cfg becomes the running configuration: each checked server takes the
 * check state of the server it replaces (if that one was checked), then
 * its first check is queued within min(interval, 1 s), spread at random.
 * Context: process, under ktn->lock, after the swap and after the old
 * configuration's checks stopped.
 */
void kt_checks_start(struct kt_config *cfg)
{
	u32 i;

	for (i = 0; i < cfg->nchecks; i++) {
		struct kt_check *ck = &cfg->checks[i];
		struct kt_server *s = ck->srv, *o = s->carried;
		u32 first = min(ck->pool->check.interval_ms, 1000U);

		ck->ktn = cfg->ktn;
		if (o && o->check) {
			s->check_state = o->check_state;
			s->check_last = o->check_last;
			s->check_changes = o->check_changes;
			ck->fail_run = 0;
		}
		queue_delayed_work(kt_check_wq, &ck->work,
				   msecs_to_jiffies(get_random_u32_below(first)) + 1);
	}
	for (i = 0; i < cfg->nservers; i++)
		cfg->servers[i].carried = NULL;	/* the old one goes */
	cfg->checks_live = true;
}

/*
 * Stop every check of @cfg and wait until none runs.  A check waiting on
 * its socket is woken and gives up at once.  Context: process, under
 * ktn->lock (check works never take it).
 */
void kt_checks_stop(struct kt_config *cfg)
{
	u32 i;

	if (!cfg->checks_live)
		return;
	for (i = 0; i < cfg->nchecks; i++) {
		WRITE_ONCE(cfg->checks[i].stopping, true);
		wake_up(&cfg->checks[i].wq);
	}
	for (i = 0; i < cfg->nchecks; i++)
		cancel_delayed_work_sync(&cfg->checks[i].work);
	cfg->checks_live = false;
}

int kt_check_wq_init(void)
{
	/* unbound: a check waits on its socket; at most 256 run at once */
	kt_check_wq = alloc_workqueue("ktcpvs_check", WQ_UNBOUND, 0);
	return kt_check_wq ? 0 : -ENOMEM;
}

void kt_check_wq_exit(void)
{
	destroy_workqueue(kt_check_wq);
}

// SPDX-License-Identifier: GPL-2.0
/*
 * kt_backend.c - a request's backend connection: schedule a server, reuse
 * a kept or idle connection to it or connect anew, try another server when
 * a connect fails, send a request once more when a reused connection
 * closes before answering, and let the connection go.  The connection's
 * work or tasklet; a connect is only ever started by the work: in softirq
 * the server is scheduled and the connect left to it (rs == RS_CONNECT
 * with no backend connection yet, kt_backend_connect_deferred).
 */

#include <linux/net.h>
#include <net/tcp.h>

#include "kt_conn.h"

/* The kept backend connection goes to @srv and looks healthy. */
bool kt_backend_reusable(struct kt_conn *c, struct kt_server *srv)
{
	struct sock *sk;

	if (!c->b || c->b->srv != srv)
		return false;
	sk = c->b->sock->sk;
	return sk->sk_state == TCP_ESTABLISHED && !sk->sk_err &&
	       !(sk->sk_shutdown & RCV_SHUTDOWN) &&
	       skb_queue_empty_lockless(&sk->sk_receive_queue);
}

/* Close the backend connection and drop what was on its way to or from it. */
void kt_conn_release_backend(struct kt_conn *c)
{
	if (!c->b)
		return;
	kt_bconn_close(c);
	kt_pipe_purge(&c->up.pipe);
	kt_pipe_purge(&c->down.pipe);
	kt_buf_put(&c->down);
}

/*
 * Between requests: park c's backend connection for reuse by any client;
 * else close it.  One the server authenticated (b->conn_auth) is closed:
 * another client would be taken for this one.  An empty response buffer
 * of one page stays for the next answer, from whichever server (a page
 * allocation per request otherwise when the scheduler moves a client
 * between servers); kt_conn_park_idle frees it.
 */
void kt_conn_drop_backend(struct kt_conn *c)
{
	if (c->b && c->rs == KT_RS_IDLE && !c->b->conn_auth &&
	    kt_backend_reusable(c, c->b->srv)) {
		kt_bconn_park(c);
		if (c->down.len || c->down.cap != KT_BUF_PAGE)
			kt_buf_put(&c->down);
	} else {
		kt_conn_release_backend(c);
	}
}

/*
 * Errors of the switch's own making (memory, local ports), which say
 * nothing about the server: they never count towards its cool-down.
 */
static bool kt_err_local(int err)
{
	switch (err) {
	case -ENOMEM:
	case -ENOBUFS:
	case -EAGAIN:
	case -EADDRNOTAVAIL:
	case -EADDRINUSE:
	case -EMFILE:
	case -ENFILE:
		return true;
	default:
		return false;
	}
}

/* Start a nonblocking connect to @srv; 0 or -errno. */
static int kt_backend_connect(struct kt_conn *c, struct kt_server *srv)
{
	int err;

	err = kt_bconn_new(c, srv);
	if (err)
		return err;
	c->b_reused = false;
	err = kernel_connect(c->b->sock, (struct sockaddr_unsized *)&srv->addr,
			     srv->addrlen, O_NONBLOCK);
	if (err && err != -EINPROGRESS) {
		kt_conn_release_backend(c);
		return err;
	}
	kt_stat_inc(srv->st, conns);
	kt_stat_inc(c->pool->st, conns);
	return 0;
}

/* The request's server is now @srv (its active count includes it). */
static void kt_backend_assign(struct kt_conn *c, struct kt_server *srv)
{
	if (c->srv == srv)
		return;
	if (c->srv)
		atomic_dec(&c->srv->st->active);
	c->srv = srv;
	atomic_inc(&srv->st->active);
	kt_alog_server(c, srv);
}

/* A response is awaited on the backend connection. */
static void kt_backend_ready(struct kt_conn *c, bool connecting)
{
	kt_http_resp_init(&c->down.ms->msg, NULL, NULL, 0, c->req_method);
	kt_dir_reset(&c->down);
	if (connecting) {
		c->rs = KT_RS_CONNECT;
		c->deadline = jiffies + c->svc->t_connect;
	} else if (c->rq == KT_RQ_TUNNEL) {	/* a raw service */
		kt_conn_tunnel(c);
	} else {
		c->rs = KT_RS_HEAD;
		c->deadline = jiffies + c->svc->t_backend;
	}
}

/*
 * The client's own backend connection, if its server authenticated it
 * (NTLM, Negotiate: kt_bconn.conn_auth), goes before the scheduler: when
 * the request's first try is for that connection's pool and its server may
 * take requests, the request goes there, on that connection.  The server's
 * index in c->pool, or -1.  c->b's server is one of c->cfg's (a new
 * configuration closes it: kt_conn_refresh_config).
 */
static int kt_backend_own_pick(struct kt_conn *c, const struct kt_sched_in *in)
{
	const struct kt_server *srv;
	u32 i;

	if (!c->b || !c->b->conn_auth || in->ntried)
		return -1;
	srv = c->b->srv;
	if (&c->cfg->pools[srv->pool] != c->pool)
		return -1;
	i = srv - c->pool->servers;
	return kt_sched_usable(c->pool, i, in, jiffies) ? i : -1;
}

/*
 * Schedule a server of c->pool not tried yet and start talking to it.
 * @local: a connect of this request already failed on the switch's side
 * (the answer is then 503, not 502, when no server is left).
 */
static void kt_backend_pick_from(struct kt_conn *c, bool local)
{
	struct kt_sched_in in = {
		.client_hash = c->client_hash,
		.dest_hash = c->dest_hash,
		.tried = c->tried,
		.cookie_id = c->persist_id,
	};
	struct kt_server *srv;
	int i, err;

	kt_addr_bytes(&c->peer, &in.family, in.addr);
	for (;;) {
		in.ntried = c->ntried;
		i = kt_backend_own_pick(c, &in);
		if (i < 0)
			i = kt_schedule(c->pool, &in);
		if (i < 0)
			break;
		srv = &c->pool->servers[i];
		kt_backend_assign(c, srv);
		if (c->ntried < KT_MAX_TRIES)
			c->tried[c->ntried++] = i;

		if (kt_backend_reusable(c, srv)) {
			c->b_reused = true;
			kt_backend_ready(c, false);
			return;
		}
		kt_conn_drop_backend(c);
		if (kt_bconn_pop(c, srv)) {
			c->b_reused = true;
			kt_backend_ready(c, false);
			return;
		}
		if (!in_task()) {
			c->b_reused = false;
			kt_backend_ready(c, true);
			kt_io_defer();
			return;
		}
		err = kt_backend_connect(c, srv);
		if (!err) {
			kt_backend_ready(c, true);
			return;
		}
		if (kt_err_local(err)) {
			local = true;
			kt_conn_count_error(c, KT_E_LOCAL);
		} else {
			kt_stat_inc(srv->st, errors[KT_E_CONNECT]);
			kt_server_failed(srv);
		}
		if (c->ntried >= KT_MAX_TRIES)
			break;
	}
	if (local)
		kt_conn_fail(c, KT_E_LOCAL, 503,
			     "the switch cannot open a connection now");
	else if (c->ntried)
		kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
			     "no server of the pool is reachable");
	else
		kt_conn_fail(c, KT_E_UNAVAILABLE, 503,
			     "no server of the pool is available");
}

void kt_backend_pick(struct kt_conn *c)
{
	kt_backend_pick_from(c, false);
}

/* The connect to c->srv failed or timed out: try another server. */
void kt_backend_retry(struct kt_conn *c)
{
	kt_stat_inc(c->srv->st, errors[KT_E_CONNECT]);
	kt_server_failed(c->srv);
	kt_conn_release_backend(c);
	if (c->ntried >= KT_MAX_TRIES) {
		kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
			     "no server of the pool is reachable");
		return;
	}
	kt_backend_pick(c);
}

/*
 * The backend connection failed before the response was complete.  If it
 * had served an earlier request and closed before any byte of this
 * request's answer -- the server ending an idle connection as the request
 * arrived -- and the request is idempotent and still wholly in the buffer
 * (c->hold), it is sent once more on a new connection to the same server,
 * as nginx's proxy_next_upstream does.  Otherwise 502, or the connection
 * is cut once the answer has started.
 */
void kt_backend_lost(struct kt_conn *c, int kind, const char *reason)
{
	struct kt_server *srv = c->srv;
	int err;

	if (c->hold && !c->retried && !c->resp_started && !c->down.len) {
		c->retried = true;
		kt_conn_count_error(c, KT_E_RETRY);
		kt_conn_release_backend(c);
		c->up.sent = 0;		/* all of it goes again */
		c->rq = KT_RQ_SEND;
		if (!in_task()) {
			c->resend_connect = true;
			kt_backend_ready(c, true);
			kt_io_defer();
			return;
		}
		err = kt_backend_connect(c, srv);
		if (!err) {
			kt_backend_ready(c, true);
			return;
		}
		c->hold = false;
		if (!kt_err_local(err)) {
			kt_stat_inc(srv->st, errors[KT_E_CONNECT]);
			kt_server_failed(srv);
		}
		kt_backend_pick(c);
		return;
	}
	kt_conn_count_error(c, kind);
	if (!c->resp_started)
		kt_conn_answer(c, 502, reason, NULL, 0);
	else
		kt_conn_close(c);
}

/*
 * The softirq run scheduled c->srv but left the connect to the work: start
 * it now, or go on as the connect failing in kt_backend_pick or
 * kt_backend_lost would have -- another server, or 502 (503 when the
 * switch itself could not open a connection).  Context: the connection's
 * work.
 */
void kt_backend_connect_deferred(struct kt_conn *c)
{
	struct kt_server *srv = c->srv;
	bool resend = c->resend_connect;
	bool local;
	int err;

	c->resend_connect = false;
	err = kt_backend_connect(c, srv);
	if (!err)
		return;
	local = kt_err_local(err);
	if (resend) {			/* as kt_backend_lost */
		c->hold = false;
		if (!local) {
			kt_stat_inc(srv->st, errors[KT_E_CONNECT]);
			kt_server_failed(srv);
		}
		kt_backend_pick(c);
		return;
	}
	if (local) {			/* as kt_backend_pick */
		kt_conn_count_error(c, KT_E_LOCAL);
	} else {
		kt_stat_inc(srv->st, errors[KT_E_CONNECT]);
		kt_server_failed(srv);
	}
	if (c->ntried < KT_MAX_TRIES)
		kt_backend_pick_from(c, local);
	else if (local)
		kt_conn_fail(c, KT_E_LOCAL, 503,
			     "the switch cannot open a connection now");
	else
		kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
			     "no server of the pool is reachable");
}

// SPDX-License-Identifier: GPL-2.0
/*
 * kt_response.c - the response side of an exchange: the backend connect,
 * the response head (interim answers, tunnels, the client's close), its
 * body, and what comes after the exchange.  The connection's work or its
 * tasklet (kt_conn.c); what needs process context defers to the work.
 */

#include <linux/string.h>
#include <linux/skbuff.h>
#include <net/tcp.h>
#include <net/tcp_states.h>

#include "kt_conn.h"

static enum kt_step kt_rs_connect(struct kt_conn *c)
{
	struct sock *sk;

	if (!c->b) {		/* scheduled in softirq: the work connects */
		if (!in_task()) {
			kt_io_defer();
			return KT_BLOCKED;
		}
		kt_backend_connect_deferred(c);
		return KT_PROGRESS;
	}
	sk = c->b->sock->sk;
	if (sk->sk_state == TCP_ESTABLISHED) {
		kt_alog_mark_connect(c);
		if (c->rq == KT_RQ_TUNNEL) {	/* a raw service */
			kt_conn_tunnel(c);
		} else {
			c->rs = KT_RS_HEAD;
			c->deadline = jiffies + c->svc->t_backend;
		}
		return KT_PROGRESS;
	}
	if (sk->sk_state == TCP_CLOSE || sk->sk_err) {
		kt_backend_retry(c);
		return KT_PROGRESS;
	}
	return KT_BLOCKED;
}

/* True if b[0, n) is "keep-alive" with optional whitespace around it. */
static bool kt_is_keep_alive(const u8 *b, u32 n)
{
	while (n && (b[0] == ' ' || b[0] == '\t')) {
		b++;
		n--;
	}
	while (n && (b[n - 1] == ' ' || b[n - 1] == '\t'))
		n--;
	return n == 10 && !strncasecmp((const char *)b, "keep-alive", 10);
}

/*
 * The client's connection ends with this response but the server's does
 * not (kt_head_edit dropped the client's lone "Connection: close"): say so
 * in the head.  Lines "Connection: keep-alive" go (the parser has checked
 * the head: CRLF line ends), and "Connection: close" is added before the
 * final CRLF.
 */
static int kt_close_response(struct kt_conn *c)
{
	static const char line[] = "Connection: close\r\n";
	struct kt_dir *d = &c->down;
	u32 n = sizeof(line) - 1, i = 0, start, gone;
	u8 *b = d->buf;

	while (i < d->ms->msg.head_len && b[i] != '\n')	/* the status line */
		i++;
	for (i++; i + 2 < d->ms->msg.head_len;) {
		start = i;
		while (b[i] != '\n')
			i++;
		i++;
		if (i - start < 13 ||
		    strncasecmp((const char *)b + start, "connection:", 11) ||
		    !kt_is_keep_alive(b + start + 11, i - start - 13))
			continue;
		gone = i - start;
		memmove(b + start, b + i, d->len - i);
		d->len -= gone;
		d->ms->msg.head_len -= gone;
		i = start;
	}
	return kt_resp_add_line(c, line, n);
}

/*
 * A final 401 (407) whose WWW-Authenticate (Proxy-Authenticate) field
 * offers a connection-based scheme: the server is about to authenticate
 * this backend connection, which from now on serves this client only
 * (kt_bconn.conn_auth).  The head is complete, its lines end in CRLF.
 */
static bool kt_conn_auth_challenge(struct kt_conn *c, unsigned int st)
{
	const char *name = st == 401 ? "www-authenticate:" : "proxy-authenticate:";
	const struct kt_http_msg *m = &c->down.ms->msg;
	u32 nl = strlen(name), i = m->start_off, start;
	const u8 *b = c->down.buf;

	while (i < m->head_len && b[i] != '\n')	/* the status line */
		i++;
	for (i++; i + 2 < m->head_len;) {
		start = i;
		while (b[i] != '\n')
			i++;
		i++;
		if (i - start >= nl + 2 &&
		    !strncasecmp((const char *)b + start, name, nl) &&
		    kt_http_auth_per_connection(b + start + nl,
						i - start - nl - 2))
			return true;
	}
	return false;
}

/*
 * Add @line (@n bytes, ending in CRLF) to the complete response head in
 * c->down, before its final CRLF.  0 or -ENOMEM.
 */
int kt_resp_add_line(struct kt_conn *c, const char *line, u32 n)
{
	struct kt_dir *d = &c->down;
	u32 at = d->ms->msg.head_len - 2;

	if (d->len + n > d->cap && kt_buf_grow(d, d->len + n))
		return -ENOMEM;
	memmove(d->buf + at + n, d->buf + at, d->len - at);
	memcpy(d->buf + at, line, n);
	d->len += n;
	d->ms->msg.head_len += n;
	return 0;
}

/*
 * The response head is complete.  Interim answers go out and the final one
 * is awaited; a tunnel starts only when the request asked for one; the
 * head goes out with the body bytes that came with it, in one send, or
 * before the body's start that its read took into the pipe.
 */
static void kt_rs_head_done(struct kt_conn *c)
{
	struct kt_dir *d = &c->down;
	struct kt_http_msg *m = &d->ms->msg;
	unsigned int st = m->status;

	d->sent = 0;
	if (st >= 100 && st < 200 && st != 101) {
		/* interim response: forward it, then parse the final one */
		d->fwd = m->head_len;
		kt_http_resp_init(m, NULL, NULL, 0, c->req_method);
		return;
	}
	kt_alog_status(c, st);		/* the final answer */
	if ((st == 401 || st == 407) && c->b && !c->b->conn_auth &&
	    kt_conn_auth_challenge(c, st))
		c->b->conn_auth = true;
	if (m->framing == KT_HTTP_FR_TUNNEL) {
		/*
		 * 101 only answers a request that asked to upgrade; a 2xx to
		 * CONNECT answers CONNECT (the parser's framing says so).
		 * Anything else past the rules would be a way around them.
		 */
		if (st == 101 && !(c->req_flags & KT_HTTP_UPGRADE)) {
			kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
				     "the server switched protocols unasked");
			return;
		}
		kt_up_release_hold(c);
		d->fwd = d->len;	/* the head and whatever followed it */
		kt_conn_tunnel(c);
		return;
	}
	if ((!c->client_ka && (m->flags & KT_HTTP_KEEP_ALIVE) &&
	     kt_close_response(c)) ||
	    (c->pool->persist.kind == KT_PERSIST_COOKIE &&
	     c->srv->id != c->persist_id && kt_persist_set_cookie(c))) {
		kt_conn_count_error(c, KT_E_LOCAL);
		kt_conn_close(c);
		return;
	}
	kt_http_body_init(&d->ms->body, m);
	d->big = false;
	d->body_done = m->framing == KT_HTTP_FR_NONE;
	d->fwd = m->head_len;
	c->rs = KT_RS_BODY;
	if (d->pipe.bytes) {
		/* the body's start, taken into the pipe with the head */
		d->body_done = kt_http_body_skip(&d->ms->body, d->pipe.bytes) ==
			       KT_HTTP_DONE;
		return;
	}
	if (!d->body_done && d->len > d->fwd) {
		/* body bytes that came with the head: out with it */
		size_t used;
		int r = kt_http_body_feed(&d->ms->body, d->buf + d->fwd,
					  d->len - d->fwd, &used);

		if (r == KT_HTTP_ERROR) {
			kt_conn_count_error(c, KT_E_BAD_GATEWAY);
			kt_conn_close(c);
			return;
		}
		d->fwd += used;
		d->body_done = r == KT_HTTP_DONE;
	}
}

/*
 * Reading the response head (kt_rs_read_head): bytes are copied into the
 * buffer and parsed as they come.  Once the head is complete, the body
 * bytes that came with it are kept in the buffer, to go out with the head
 * in one send -- unless the body is longer than what came: a Content-Length
 * body whose rest must be spliced anyway is spliced whole, its first bytes
 * taken into the pipe by the same read (one read for the head and the
 * body's start, and the head goes out with MSG_MORE before them, in one
 * segment, kt_dir_step).  Anything else -- an interim answer, a tunnel, a
 * chunked or close-delimited body, a body that came whole -- stays copied.
 */
struct kt_head_read {
	struct kt_conn *c;
	u64 body;		/* body bytes the pipe may still take */
	bool parsed;		/* the head is in: copy what follows */
	bool splice;		/* the head is in: the body goes to the pipe */
	bool done;		/* nothing more to read in this call */
	int error;
};

/* Does a parsed head's body go to the pipe, @came of its bytes having come? */
static bool kt_rs_splice_body(const struct kt_http_msg *m, u32 came)
{
	return m->status >= 200 && m->framing == KT_HTTP_FR_LENGTH &&
	       m->content_length > came;
}

/* tcp_read_sock() actor of kt_rs_read_head(); under the server's socket lock. */
static int kt_rs_head_actor(read_descriptor_t *desc, struct sk_buff *skb,
			    unsigned int off, size_t len)
{
	struct kt_head_read *hr = desc->arg.data;
	struct kt_dir *d = &hr->c->down;
	struct kt_http_msg *m = &d->ms->msg;
	u32 had = d->len, n;
	size_t took;

	if (hr->done)
		return 0;
	if (hr->splice) {
		took = kt_pipe_take(&d->pipe, skb, off,
				    min_t(u64, len, hr->body), &hr->error);
		hr->body -= took;
		hr->done = !took || !hr->body;
		return took;
	}
	n = min_t(size_t, len, d->cap - d->len);
	if (!n) {
		hr->done = true;
		return 0;
	}
	if (skb_copy_bits(skb, off, d->buf + had, n)) {
		hr->error = -EFAULT;
		hr->done = true;
		return 0;
	}
	d->len += n;
	if (hr->parsed)
		return n;		/* a body that came with its head */
	switch (kt_http_parse(m, d->buf, d->len)) {
	case KT_HTTP_DONE:
		hr->parsed = true;
		if (WARN_ON_ONCE(m->head_len <= had) ||
		    !kt_rs_splice_body(m, d->len - m->head_len))
			return n;
		/* the copied body bytes are taken again, into the pipe */
		d->len = m->head_len;
		hr->splice = true;
		hr->body = min_t(u64, m->content_length,
				 KT_PIPE_BYTES - d->pipe.bytes);
		return m->head_len - had;
	case KT_HTTP_ERROR:
		hr->done = true;	/* kt_rs_head answers it */
		return n;
	default:
		return n;
	}
}

static int kt_rs_read_head_locked(struct sock *sk, void *arg)
{
	read_descriptor_t *desc = arg;
	struct kt_head_read *hr = desc->arg.data;

	return kt_read_result(sk, tcp_read_sock(sk, desc, kt_rs_head_actor),
			      hr->error);
}

/*
 * Read what the server sent of its response head (and the body's start)
 * into the buffer and the pipe.  Bytes read (> 0), 0 at the end of the
 * stream, -EAGAIN, or -errno.  The server's socket lock only.
 */
static int kt_rs_read_head(struct kt_conn *c)
{
	struct kt_head_read hr = { .c = c };
	read_descriptor_t desc = { .arg.data = &hr, .count = 1 };
	struct socket *b = kt_bsk(c);

	if (kt_sk_tls(b->sk))
		return kt_recv(b, c->down.buf + c->down.len,
			       c->down.cap - c->down.len);
	return kt_sock_call(b->sk, kt_rs_read_head_locked, &desc);
}

/* The response head is too large for the buffer: grow it, up to 64 KiB. */
static bool kt_rs_room(struct kt_dir *d)
{
	if (d->len < d->cap)
		return true;
	return d->cap < KT_HTTP_DEF_HEAD &&
	       !kt_buf_grow(d, min_t(u32, d->cap * 2, KT_HTTP_DEF_HEAD));
}

static enum kt_step kt_rs_head(struct kt_conn *c)
{
	struct kt_dir *d = &c->down;
	u32 had;
	int r, n;

	if (d->fwd > d->sent) {		/* an interim response goes out first */
		switch (kt_dir_send(c, d)) {
		case KT_IO_MOVED:
			return KT_PROGRESS;
		case KT_IO_AGAIN:
			return KT_BLOCKED;
		default:
			kt_conn_count_error(c, KT_E_CLIENT_RESET);
			kt_conn_close(c);
			return KT_PROGRESS;
		}
	}
	if (d->len) {
		r = kt_http_parse(&d->ms->msg, d->buf, d->len);
		if (r == KT_HTTP_DONE) {
			kt_rs_head_done(c);
			return KT_PROGRESS;
		}
		if (r == KT_HTTP_ERROR) {
			kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
				     "the server sent an invalid response");
			return KT_PROGRESS;
		}
	}
	/* the response buffer is taken only when the server has sent something */
	if (!kt_sk_readable(kt_bsk(c)->sk))
		return KT_BLOCKED;
	if (!in_task() && (kt_buf_get(d) || d->len == d->cap)) {
		kt_io_defer();	/* memory, or a large head: the work reads */
		return KT_BLOCKED;
	}
	if (kt_buf_get(d)) {
		kt_conn_fail(c, KT_E_LOCAL, 503, "the switch is out of memory");
		return KT_PROGRESS;
	}
	if (!kt_rs_room(d)) {
		kt_conn_fail(c, KT_E_BAD_GATEWAY, 502,
			     "the server's response head is too large");
		return KT_PROGRESS;
	}
	had = d->len;
	n = kt_rs_read_head(c);
	if (n == -EAGAIN)
		return KT_BLOCKED;
	if (n <= 0) {
		kt_backend_lost(c, KT_E_BACKEND_RESET,
				"the server closed the connection");
		return KT_PROGRESS;
	}
	kt_up_release_hold(c);		/* the answer has started */
	if (!had)
		kt_alog_mark_first_byte(c);
	c->deadline = jiffies + c->svc->t_backend;
	if (d->pipe.bytes)	/* the read parsed the head: the body is under way */
		kt_rs_head_done(c);
	return KT_PROGRESS;
}

/*
 * The client asked to close -- its request said so, or it is HTTP/1.0 --
 * its request was read to its end, the answer was length-delimited (@ka:
 * the server's framing would have allowed the next request), and nothing
 * more of the client's waits, read ahead or in the socket: nothing is owed
 * either way, so the connection closes at once instead of lingering.  Its
 * release work shuts it down and releases it, which sends the FIN after
 * what is queued; the client, which needs no end of stream to end this
 * answer, usually closes first.  No work item runs for it (a lingering
 * close shuts down in the work, then reads until the client closes).
 * Lingering stays for a client that may still be sending (nginx's
 * lingering_close "on" decides alike), for a close-delimited answer, whose
 * end the client learns from the FIN, and for TLS, whose close_notify the
 * shutdown sends.  A client that sends after its own close is reset by
 * TCP when the socket is released.
 */
static bool kt_close_at_once(struct kt_conn *c, bool ka)
{
	struct sock *sk = c->csk->sk;

	return ka && !c->client_ka && !c->tls && !c->up.len &&
	       skb_queue_empty_lockless(&sk->sk_receive_queue);
}

/* The response is complete and forwarded: next request, or close. */
static void kt_exchange_done(struct kt_conn *c)
{
	bool ka = (c->down.ms->msg.flags & KT_HTTP_KEEP_ALIVE) &&
		  c->rq == KT_RQ_DONE;

	if (c->srv)
		kt_server_ok(c->srv);
	kt_conn_end_request(c);
	kt_up_release_hold(c);
	if (c->alog_on) {
		/* what is left in up.buf was read ahead: the next request's */
		if (c->rq == KT_RQ_DONE)
			c->rq_in -= min_t(u64, c->rq_in, c->up.len);
		kt_alog_emit(c, KTCPVS_END_NORMAL);
	}
	/* bytes after the response: the server's connection is not kept */
	if (!ka || c->down.len)
		kt_conn_release_backend(c);
	c->rs = KT_RS_IDLE;	/* the exchange is over: the backend may be parked */
	if (kt_close_at_once(c, ka)) {
		kt_alog_done(c, kt_alog_end_or(c, KTCPVS_END_NORMAL));
		kt_conn_close(c);
		return;
	}
	if (!c->client_ka || !ka) {
		kt_conn_linger(c);
		return;
	}
	/*
	 * The buffers stay for the client's next request (no allocation per
	 * request on a busy keep-alive connection); they go when it idles
	 * (kt_conn_park_idle).
	 *
	 * After a client's first exchange nothing says it will send again
	 * soon: its backend connection goes to the pool now, not after
	 * KT_PARK_DELAY, so that a burst of new clients opens as many backend
	 * connections as requests in flight, not one per client.  Its next
	 * request takes one back from the pool (usually this one: the pool
	 * is a stack).  One its server authenticated stays with it.
	 */
	if (c->first && !c->up.len && c->b && !c->b->conn_auth)
		kt_conn_drop_backend(c);
	c->first = false;
	kt_conn_start_request(c);
	/* a client that stays idle gives its backend connection back */
	c->park_at = c->up.len ? 0 : jiffies + KT_PARK_DELAY;
}

static enum kt_step kt_rs_body(struct kt_conn *c)
{
	struct kt_dir *d = &c->down;

	switch (kt_dir_step(c, d)) {
	case KT_IO_MOVED:
		c->deadline = jiffies + c->svc->t_backend;
		return KT_PROGRESS;
	case KT_IO_AGAIN:
		return KT_BLOCKED;
	case KT_IO_DONE:
		kt_exchange_done(c);
		return KT_PROGRESS;
	case KT_IO_SRC_EOF:
		if (kt_http_body_eof(&d->ms->body) == KT_HTTP_DONE) {
			/*
			 * Close-delimited: the end of the body ends the
			 * client's connection too.  The backend connection
			 * stays until the exchange is done, however far the
			 * request got: kt_exchange_done() then closes both.
			 */
			d->body_done = true;
			c->client_ka = false;
			return KT_PROGRESS;
		}
		kt_conn_count_error(c, KT_E_BACKEND_RESET);
		kt_conn_close(c);
		return KT_PROGRESS;
	case KT_IO_DST_ERR:
		kt_conn_count_error(c, KT_E_CLIENT_RESET);
		kt_conn_close(c);
		return KT_PROGRESS;
	case KT_IO_BAD:
		kt_conn_count_error(c, KT_E_BAD_GATEWAY);
		kt_conn_close(c);
		return KT_PROGRESS;
	default:	/* the server reset mid-response */
		kt_conn_count_error(c, KT_E_BACKEND_RESET);
		kt_conn_close(c);
		return KT_PROGRESS;
	}
}

/*
 * Both directions become a tunnel (a 101 or a 2xx to CONNECT went through,
 * or a raw service's backend is connected): nothing is parsed any more, so
 * the message states go; a tunnel that goes quiet holds its connection and
 * its sockets only (kt_dir_tunnel gives the buffers back).
 */
void kt_conn_tunnel(struct kt_conn *c)
{
	c->rs = KT_RS_TUNNEL;
	c->rq = KT_RQ_TUNNEL;
	c->client_ka = false;
	c->deadline = jiffies + c->svc->t_idle;
	kt_conn_msgs_put(c);
}

/* Backend -> client of a tunnel, until the server closes. */
static enum kt_step kt_rs_tunnel(struct kt_conn *c)
{
	switch (kt_dir_tunnel(c, &c->down)) {
	case KT_IO_MOVED:
		c->deadline = jiffies + c->svc->t_idle;
		return KT_PROGRESS;
	case KT_IO_AGAIN:
		return KT_BLOCKED;
	case KT_IO_SRC_EOF:
		kt_conn_linger(c);
		return KT_PROGRESS;
	default:
		kt_conn_close(c);
		return KT_PROGRESS;
	}
}

enum kt_step kt_step_response(struct kt_conn *c)
{
	switch (c->rs) {
	case KT_RS_CONNECT:
		return kt_rs_connect(c);
	case KT_RS_HEAD:
		return kt_rs_head(c);
	case KT_RS_BODY:
		return kt_rs_body(c);
	case KT_RS_TUNNEL:
		return kt_rs_tunnel(c);
	default:
		return KT_BLOCKED;
	}
}

/*
 * The client has sent nothing since its last response for KT_PARK_DELAY:
 * its backend connection goes to the server's idle pool (or is closed when
 * the pool is full), where any client connection can use it, and it lets
 * go of its buffers, its access log record buffer and of the configuration
 * until its next request.  A backend connection its server authenticated
 * (NTLM, Negotiate) stays with the client, and with it the configuration
 * its server belongs to and the buffers, as in the second before: only
 * one the server has closed goes.
 */
void kt_conn_park_idle(struct kt_conn *c)
{
	if (!c->park_at || time_before(jiffies, c->park_at))
		return;
	c->park_at = 0;
	if (c->cs != KT_CS_OPEN || c->rq != KT_RQ_HEAD || c->parsing ||
	    c->up.len || c->rs != KT_RS_IDLE)
		return;
	if (c->b && c->b->conn_auth) {
		if (kt_backend_reusable(c, c->b->srv))
			return;
		kt_conn_release_backend(c);
	}
	kt_conn_drop_backend(c);
	kt_buf_put(&c->up);
	kt_buf_put(&c->down);
	kt_conn_msgs_put(c);
	if (!c->alog_on)	/* no record pending: the next request takes one */
		kt_alog_free(c);
	if (c->cfg) {
		kt_config_put(c->cfg);
		c->cfg = NULL;
		c->svc = NULL;
	}
}

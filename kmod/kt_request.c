// SPDX-License-Identifier: GPL-2.0
/*
 * kt_request.c - the request side of an exchange: read and parse the head,
 * route it, edit it, send it, then its body or a tunnel's client half.
 * The connection's work or its tasklet (kt_conn.c); what needs process
 * context defers to the work.
 */

#include <linux/jhash.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <net/ipv6.h>

#include "kt_conn.h"

/* Prepare for the next request; its head may already wait in up.buf. */
void kt_conn_start_request(struct kt_conn *c)
{
	/* an exchange that ended some other way than kt_exchange_done's */
	kt_alog_done(c, kt_alog_end_or(c, KTCPVS_END_NORMAL));
	c->alog_decided = false;
	c->alog_hint = KT_ALOG_NO_HINT;
	c->rq_in = c->up.len;	/* bytes of it read with the last request */
	c->rq_out = 0;
	c->rq = KT_RQ_HEAD;
	c->rs = KT_RS_IDLE;
	c->resp_started = false;
	c->parsing = false;
	c->hold = false;
	c->retried = false;
	c->resend_connect = false;
	c->counted = false;
	c->b_reused = false;
	c->ntried = 0;
	c->up.fwd = 0;
	c->up.sent = 0;
	kt_dir_reset(&c->up);
	kt_dir_reset(&c->down);
	/* a connection's first request, or one already arriving: header timeout */
	if (c->svc)
		c->deadline = jiffies + (c->first || c->up.len ? c->svc->t_header :
					 c->svc->t_idle);
	c->late_read = false;
}

/* The request kept for a retry goes: the response has started. */
void kt_up_release_hold(struct kt_conn *c)
{
	if (!c->hold)
		return;
	c->hold = false;
	kt_buf_drop_sent(&c->up);
}

/* Use the newest configuration for this request; false: the service is gone. */
static bool kt_conn_refresh_config(struct kt_conn *c)
{
	struct kt_config *cfg = kt_config_tryget(c->ktn);

	/*
	 * A kept backend connection belongs to a server of the old
	 * configuration: servers are matched by pointer, and a freed
	 * configuration's memory may come back as another one's, so it is
	 * never carried across.
	 */
	if (cfg != c->cfg)
		kt_conn_release_backend(c);
	if (c->cfg)
		kt_config_put(c->cfg);
	c->cfg = cfg;
	c->svc = cfg ? kt_config_service(cfg, &c->laddr) : NULL;
	return c->svc;
}

static void kt_slice(struct kt_match_slice *s, const u8 *base, u32 off, u32 len)
{
	s->ptr = base + off;
	s->len = len;
}

/* Delete buf[start, end) of the request head. */
static void kt_head_cut(struct kt_conn *c, u32 start, u32 end)
{
	struct kt_dir *d = &c->up;

	memmove(d->buf + start, d->buf + end, d->len - end);
	d->len -= end - start;
	d->ms->msg.head_len -= end - start;
}

/* The end of the field line (just past its LF) of field @f. */
static u32 kt_field_line_end(const struct kt_conn *c,
			     const struct kt_http_field *f)
{
	const struct kt_dir *d = &c->up;
	u32 end = f->value_off + f->value_len;

	while (end < d->ms->msg.head_len && d->buf[end] != '\n')
		end++;
	return end + 1;
}

/*
 * Edits that need the head's fields, made while they are at hand (in the
 * parse scratch, BHs off; no allocation): client-sent
 * X-Forwarded-For fields go when the service replaces them,
 * X-Forwarded-Proto fields when it sets its own (kt_head_add), and a lone
 * "Connection: close" of an HTTP/1.1 request goes so that the server's
 * connection stays open for other clients (the client's answer gets
 * "Connection: close" from the switch instead, kt_rs_head_done).  Fields
 * are cut from the last to the first, so earlier offsets stay valid.
 */
static void kt_head_edit(struct kt_conn *c)
{
	struct kt_http_msg *m = &c->up.ms->msg;
	const u8 *b = c->up.buf;
	bool replace = c->svc->flags & KT_SERVICE_XFF_REPLACE;
	bool xfp = c->svc->flags & KT_SERVICE_XFP;
	bool strip = m->version == 11 && (m->flags & KT_HTTP_CONN_CLOSE) &&
		     !(m->flags & (KT_HTTP_CONN_KA | KT_HTTP_CONN_UPGRADE));
	int nconn = 0, i;

	if (strip) {
		for (i = 0; i < (int)m->nfields; i++) {
			const struct kt_http_field *f = &m->fields[i];

			if (f->name_len == 10 &&
			    !strncasecmp((const char *)b + f->name_off, "connection", 10))
				nconn++;
		}
		strip = nconn == 1;
	}
	if (!strip && !replace && !xfp)
		return;
	for (i = m->nfields - 1; i >= 0; i--) {
		const struct kt_http_field *f = &m->fields[i];
		const char *name = (const char *)c->up.buf + f->name_off;
		u32 end;

		if (replace && f->name_len == 15 &&
		    !strncasecmp(name, "x-forwarded-for", 15)) {
			kt_head_cut(c, f->name_off, kt_field_line_end(c, f));
			continue;
		}
		if (xfp && f->name_len == 17 &&
		    !strncasecmp(name, "x-forwarded-proto", 17)) {
			kt_head_cut(c, f->name_off, kt_field_line_end(c, f));
			continue;
		}
		if (!strip || f->name_len != 10 || strncasecmp(name, "connection", 10) ||
		    f->value_len != 5 ||
		    strncasecmp((const char *)c->up.buf + f->value_off, "close", 5))
			continue;
		end = kt_field_line_end(c, f);
		if (end <= m->head_len - 2)	/* the final CRLF stays */
			kt_head_cut(c, f->name_off, end);
	}
}

/* Insert the field line @line (@n bytes) before the head's final CRLF. */
static int kt_head_insert(struct kt_conn *c, const char *line, u32 n)
{
	struct kt_dir *d = &c->up;
	u32 at = d->ms->msg.head_len - 2;

	if (d->len + n > d->cap && kt_buf_grow(d, d->len + n))
		return -ENOMEM;
	memmove(d->buf + at + n, d->buf + at, d->len - at);
	memcpy(d->buf + at, line, n);
	d->len += n;
	d->ms->msg.head_len += n;
	return 0;
}

/* The fields the service adds: X-Forwarded-For, X-Forwarded-Proto. */
static int kt_head_add(struct kt_conn *c)
{
	static const char xfp[] = "X-Forwarded-Proto: https\r\n";
	u32 flags = c->svc->flags;
	char line[64];
	int n;

	if (flags & (KT_SERVICE_XFF_APPEND | KT_SERVICE_XFF_REPLACE)) {
		if (c->peer.sa.sa_family == AF_INET)
			n = scnprintf(line, sizeof(line), "X-Forwarded-For: %pI4\r\n",
				      &c->peer.in.sin_addr);
		else
			n = scnprintf(line, sizeof(line), "X-Forwarded-For: %pI6c\r\n",
				      &c->peer.in6.sin6_addr);
		if (kt_head_insert(c, line, n))
			return -ENOMEM;
	}
	if ((flags & KT_SERVICE_XFP) && kt_head_insert(c, xfp, sizeof(xfp) - 1))
		return -ENOMEM;
	return 0;
}

/* The parser's output room a service needs: path and host. */
static u32 kt_out_cap(const struct kt_service *svc)
{
	return svc->lim.request_line + KT_HTTP_HOST_MAX + 1;
}

/* Not a table's action: a TLS request for a host its certificate lacks. */
#define KT_ACTION_MISDIRECTED	0x100

/*
 * Match the request whose complete head was just parsed into @s; then,
 * with the fields at hand, make the head's edits.  On a TLS connection
 * whose acceptor gave its certificate's names, a request for another host
 * (RFC 9110 15.5.20) matches no rule: KT_ACTION_MISDIRECTED.  BHs off.
 */
static void kt_route_match(struct kt_conn *c, struct kt_scratch *s,
			   struct kt_match_result *res)
{
	struct kt_http_msg *m = &c->up.ms->msg;
	struct kt_match_req mr = { };
	const u8 *b = c->up.buf;
	u32 i;

	kt_slice(&mr.method, b, m->method_off, m->method_len);
	kt_slice(&mr.host, s->out, m->host_off, m->host_len);
	kt_slice(&mr.path, s->out, m->path_off, m->path_len);
	if (m->flags & KT_HTTP_HAS_QUERY)
		kt_slice(&mr.query, b, m->query_off, m->query_len);
	for (i = 0; i < m->nfields; i++) {
		const struct kt_http_field *f = &s->fields[i];

		kt_slice(&s->mh[i].name, b, f->name_off, f->name_len);
		kt_slice(&s->mh[i].value, b, f->value_off, f->value_len);
	}
	mr.headers = s->mh;
	mr.nheaders = m->nfields;
	kt_addr_bytes(&c->peer, &mr.family, mr.addr);
	if (c->tls && c->tls->names_len && (m->flags & KT_HTTP_HAS_HOST) &&
	    !kt_tls_host_ok(c->tls->names, c->tls->names_len, mr.host.ptr,
			    mr.host.len)) {
		*res = (struct kt_match_result){ .rule = KT_RULES_NONE,
						 .action = KT_ACTION_MISDIRECTED };
		kt_alog_route(c, &mr, res);
		return;
	}
	kt_match(&c->cfg->rules, c->svc->idx, &mr, s->match, res);
	kt_alog_route(c, &mr, res);	/* before the edits move the head */
	c->persist_id = 0;
	if (res->action == KT_ACTION_ROUTE) {
		const struct kt_pool *p = &c->cfg->pools[res->pool];

		if (kt_sched_uses_dest(p))
			c->dest_hash = jhash(mr.path.ptr, mr.path.len,
					     jhash(mr.host.ptr, mr.host.len, 0));
		c->persist_id = kt_persist_cookie(p, b, s->fields, m->nfields);
	}
	kt_head_edit(c);
}

/*
 * Parse what up.buf holds of the head, resuming where the last call
 * stopped.  The parser's field records and output go to this CPU's scratch:
 * a head that arrives in one read is parsed once and routed at once; one
 * that comes in several reads is parsed incrementally without recording
 * (so nothing is held between reads) and once more, whole, at its end.
 * On KT_HTTP_DONE the request is matched: *@res.
 */
static int kt_rq_parse(struct kt_conn *c, struct kt_match_result *res)
{
	struct kt_http_msg *m = &c->up.ms->msg;
	struct kt_scratch *s = kt_scratch_get(c->cfg);
	u32 out_cap = kt_out_cap(c->svc);
	int r;

	m->out = s->out;
	m->out_cap = out_cap;
	if (!c->parse_calls) {
		m->fields = s->fields;
		m->fields_cap = c->cfg->max_fields;
	} else {
		m->fields = NULL;	/* what this call sees is parsed again */
		m->fields_cap = 0;
	}
	if (c->parse_calls < 2)
		c->parse_calls++;
	r = kt_http_parse(m, c->up.buf, c->up.len);
	if (r == KT_HTTP_DONE && c->parse_calls > 1) {
		kt_http_req_init(m, &c->svc->lim, s->fields, c->cfg->max_fields,
				 s->out, out_cap);
		r = kt_http_parse(m, c->up.buf, c->up.len);
		if (WARN_ON_ONCE(r != KT_HTTP_DONE)) {
			r = KT_HTTP_ERROR;
			m->status = 400;
			m->reason = "invalid request";
		}
	}
	if (r == KT_HTTP_DONE)
		kt_route_match(c, s, res);
	kt_scratch_put();
	return r;
}

static bool kt_idempotent(u8 method)
{
	switch (method) {
	case KT_HTTP_M_GET:
	case KT_HTTP_M_HEAD:
	case KT_HTTP_M_OPTIONS:
	case KT_HTTP_M_TRACE:
	case KT_HTTP_M_PUT:
	case KT_HTTP_M_DELETE:
		return true;
	default:
		return false;
	}
}

/*
 * The whole request is in up.buf (head, and body if any): it can be sent
 * again as it is.
 */
static bool kt_request_buffered(const struct kt_conn *c)
{
	const struct kt_http_msg *m = &c->up.ms->msg;

	switch (m->framing) {
	case KT_HTTP_FR_NONE:
		return true;
	case KT_HTTP_FR_LENGTH:
		return m->content_length <= c->up.len - m->head_len;
	default:
		return false;
	}
}

/* The head is complete and matched: act on the rule. */
static void kt_route(struct kt_conn *c, const struct kt_match_result *res)
{
	struct kt_dir *d = &c->up;
	struct kt_http_msg *m = &d->ms->msg;

	kt_stat_inc(c->svc->st, requests);
	c->req_method = m->method;
	c->req_flags = m->flags;
	c->client_ka = m->flags & KT_HTTP_KEEP_ALIVE;

	switch (res->action) {
	case KT_ACTION_ROUTE:
		c->pool = &c->cfg->pools[res->pool];
		break;
	case KT_ACTION_BLOCK:
		kt_conn_fail(c, KT_E_BLOCKED, res->status, "blocked");
		return;
	case KT_ACTION_REDIRECT:
		kt_conn_count_error(c, KT_E_REDIRECT);
		kt_conn_answer(c, res->status, "redirected", res->location.ptr,
			       res->location.len);
		return;
	case KT_ACTION_ANSWER:
		kt_conn_answer_rule(c, res->status, res->body.ptr,
				    res->body.len);
		return;
	case KT_ACTION_MISDIRECTED:
		kt_conn_fail(c, KT_E_MISDIRECTED, 421,
			     "the host is not a name of this connection's certificate");
		return;
	default:
		kt_conn_fail(c, KT_E_NO_ROUTE, 404, "no rule matches");
		return;
	}
	if (kt_head_add(c)) {
		kt_conn_fail(c, KT_E_LOCAL, 503, "the switch is out of memory");
		return;
	}
	c->rq = KT_RQ_SEND;
	d->fwd = m->head_len;
	d->sent = 0;
	kt_http_body_init(&d->ms->body, m);
	d->body_done = m->framing == KT_HTTP_FR_NONE;
	kt_backend_pick(c);
	/*
	 * On a connection that served an earlier request the server may be
	 * closing just now: an idempotent request that is wholly in the
	 * buffer is kept until the answer starts, to be sent once more.
	 */
	if (c->cs == KT_CS_OPEN && c->b_reused && kt_idempotent(c->req_method) &&
	    kt_request_buffered(c))
		c->hold = true;
}

/* The head grows past the buffer: grow it, up to the head limit. */
static bool kt_rq_room(struct kt_conn *c)
{
	struct kt_dir *d = &c->up;
	u32 max = round_up(c->svc->lim.head, PAGE_SIZE);

	if (d->len < d->cap)
		return true;
	return d->cap < max && !kt_buf_grow(d, min(d->cap * 2, max));
}

/* Count the request once its head went to a server. */
static void kt_rq_forwarded(struct kt_conn *c)
{
	if (c->counted)
		return;
	c->counted = true;
	kt_stat_inc(c->srv->st, requests);
	kt_stat_inc(c->pool->st, requests);
}

/*
 * A service of KT_SERVICE_RAW: no HTTP.  The connection goes to a server of
 * the service's unconditional route and becomes a tunnel at once, every byte
 * relayed unparsed (the floor `make bench` measures against).
 */
static void kt_route_raw(struct kt_conn *c)
{
	struct kt_match_req mr = { };
	struct kt_match_result res;
	struct kt_scratch *s;

	s = kt_scratch_get(c->cfg);
	kt_match(&c->cfg->rules, c->svc->idx, &mr, s->match, &res);
	kt_scratch_put();
	if (res.action != KT_ACTION_ROUTE) {
		kt_conn_count_error(c, KT_E_NO_ROUTE);
		kt_conn_close(c);
		return;
	}
	kt_stat_inc(c->svc->st, requests);
	c->pool = &c->cfg->pools[res.pool];
	c->client_ka = false;
	c->rq = KT_RQ_TUNNEL;
	c->up.fwd = c->up.len;
	c->up.sent = 0;
	kt_backend_pick(c);
	if (c->cs == KT_CS_OPEN)
		kt_rq_forwarded(c);
}

/*
 * A request starts: the newest configuration, the message states (a raw
 * service's response state is set up too), a buffer, a fresh parser.
 */
static bool kt_rq_begin(struct kt_conn *c)
{
	struct kt_dir *d = &c->up;

	if (!kt_conn_refresh_config(c)) {
		kt_conn_close(c);	/* the service is gone */
		return false;
	}
	if (kt_conn_msgs_get(c)) {
		kt_conn_count_error(c, KT_E_LOCAL);
		kt_conn_close(c);
		return false;
	}
	if (c->svc->flags & KT_SERVICE_RAW) {
		kt_route_raw(c);
		return false;
	}
	if (kt_buf_get(d)) {
		kt_conn_count_error(c, KT_E_LOCAL);
		kt_conn_close(c);
		return false;
	}
	kt_http_req_init(&d->ms->msg, &c->svc->lim, NULL, 0, NULL, 0);
	c->parsing = true;
	c->parse_calls = 0;
	return true;
}

static enum kt_step kt_rq_head(struct kt_conn *c)
{
	struct kt_match_result res;
	struct kt_dir *d = &c->up;
	int r, n;

	if (!c->parsing) {
		/*
		 * Nothing arrived yet: an idle connection holds no buffer (its
		 * data_ready queues the work again).
		 */
		if (!d->len && !kt_sk_readable(c->csk->sk))
			return KT_BLOCKED;
		if (!in_task() && (kt_buf_get(d) || kt_conn_msgs_get(c))) {
			kt_io_defer();	/* the work waits for the memory */
			return KT_BLOCKED;
		}
		if (!kt_rq_begin(c))
			return KT_PROGRESS;
	}
	if (d->len) {
		if (!c->alog_decided)
			kt_alog_begin(c);
		r = kt_rq_parse(c, &res);
		if (r == KT_HTTP_ERROR) {
			kt_conn_fail(c, KT_E_PARSE, d->ms->msg.status,
				     d->ms->msg.reason);
			return KT_PROGRESS;
		}
		if (r == KT_HTTP_DONE) {
			if (c->src && c->svc->src_rate &&
			    !kt_src_request(c->ktn, c->src, c->svc)) {
				kt_conn_fail(c, KT_E_SOURCE_LIMIT, 429,
					     "too many requests from this address");
				return KT_PROGRESS;
			}
			kt_route(c, &res);
			return KT_PROGRESS;
		}
	}
	/* KT_HTTP_AGAIN: read more, up to the head limit (the parser says 431) */
	if (!kt_sk_readable(c->csk->sk))
		return KT_BLOCKED;
	if (!in_task() && d->len == d->cap) {
		kt_io_defer();		/* a large head: the work grows the buffer */
		return KT_BLOCKED;
	}
	if (!kt_rq_room(c)) {
		kt_conn_fail(c, KT_E_PARSE, 431, "request head too large");
		return KT_PROGRESS;
	}
	n = kt_recv(c->csk, d->buf + d->len, d->cap - d->len);
	if (n == -EAGAIN)
		return KT_BLOCKED;
	if (n <= 0) {
		if (d->len && !kt_http_idle(&d->ms->msg))
			kt_conn_count_error(c, KT_E_CLIENT_RESET);
		kt_conn_close(c);
		return KT_PROGRESS;
	}
	if (!d->len && !c->first) {	/* a new request starts: header timeout */
		c->deadline = jiffies + c->svc->t_header;
		c->late_read = false;
	}
	d->len += n;
	c->rq_in += n;
	kt_stat_add(c->svc->st, bytes_in, n);
	return KT_PROGRESS;
}

static enum kt_step kt_rq_send(struct kt_conn *c)
{
	struct kt_dir *d = &c->up;

	if (c->rs == KT_RS_CONNECT)
		return KT_BLOCKED;
	switch (kt_dir_send(c, d)) {
	case KT_IO_MOVED:
		if (d->sent == d->fwd) {	/* the head is out */
			kt_rq_forwarded(c);
			c->rq = KT_RQ_BODY;
		}
		return KT_PROGRESS;
	case KT_IO_AGAIN:
		return KT_BLOCKED;
	default:
		kt_backend_lost(c, KT_E_BACKEND_RESET,
				"the server closed the connection");
		return KT_PROGRESS;
	}
}

static enum kt_step kt_rq_body(struct kt_conn *c)
{
	struct kt_dir *d = &c->up;

	switch (kt_dir_step(c, d)) {
	case KT_IO_MOVED:
		c->deadline = jiffies + c->svc->t_backend;
		return KT_PROGRESS;
	case KT_IO_AGAIN:
		return KT_BLOCKED;
	case KT_IO_DONE:
		c->rq = KT_RQ_DONE;
		return KT_PROGRESS;
	case KT_IO_DST_ERR:
		kt_backend_lost(c, KT_E_BACKEND_RESET,
				"the server closed the connection");
		return KT_PROGRESS;
	case KT_IO_BAD:
		kt_conn_fail(c, KT_E_PARSE, d->ms->body.status,
			     d->ms->body.reason);
		return KT_PROGRESS;
	default:	/* the client closed or reset mid-request */
		kt_conn_count_error(c, KT_E_CLIENT_RESET);
		kt_conn_close(c);
		return KT_PROGRESS;
	}
}

/*
 * Client -> backend after a 101 (or 2xx to CONNECT), or of a raw service,
 * until the client closes.
 */
static enum kt_step kt_rq_tunnel(struct kt_conn *c)
{
	if (c->rs == KT_RS_CONNECT)
		return KT_BLOCKED;
	/* the client's end passes on as a shutdown: the work does that */
	if (!in_task() && (READ_ONCE(c->csk->sk->sk_shutdown) & RCV_SHUTDOWN)) {
		kt_io_defer();
		return KT_BLOCKED;
	}
	switch (kt_dir_tunnel(c, &c->up)) {
	case KT_IO_MOVED:
		c->deadline = jiffies + c->svc->t_idle;
		return KT_PROGRESS;
	case KT_IO_AGAIN:
		return KT_BLOCKED;
	case KT_IO_SRC_EOF:
		kernel_sock_shutdown(kt_bsk(c), SHUT_WR);
		c->rq = KT_RQ_DONE;
		return KT_PROGRESS;
	default:
		kt_conn_close(c);
		return KT_PROGRESS;
	}
}

enum kt_step kt_step_request(struct kt_conn *c)
{
	switch (c->rq) {
	case KT_RQ_HEAD:
		return kt_rq_head(c);
	case KT_RQ_SEND:
		return kt_rq_send(c);
	case KT_RQ_BODY:
		return kt_rq_body(c);
	case KT_RQ_TUNNEL:
		return kt_rq_tunnel(c);
	default:
		return KT_BLOCKED;
	}
}

// SPDX-License-Identifier: GPL-2.0
/*
 * kt_access.c - the access log's side of the data path: one record per
 * exchange, filled in as the exchange goes and handed to kt_log_submit()
 * (kt_log.c, the transport) where it ends.
 *
 * A request is logged or not from its first byte on (kt_alog_begin): when
 * its service says "log on", or "log sample N" and a random draw picks it,
 * and somebody is going to read the records (kt_log_active).  Its host,
 * path and method are copied at routing time into the connection's record
 * buffer (struct kt_alog, allocated by the connection's first routed
 * logged request and kept until the client idles), the server when one is assigned, the
 * durations when the connect completes and the first response byte
 * arrives, the status when a final response head is parsed or the switch
 * answers.  The record goes out where the exchange ends:
 *
 *   kt_exchange_done   the response went out whole: KTCPVS_END_NORMAL
 *   kt_conn_linger     an answer of the switch was sent, or a tunnel ended
 *   kt_conn_close      the connection ends mid-exchange
 *   kt_conn_start_request  any other end that starts the next request
 *
 * and, but for the first, says how it ended by the last error kind the
 * exchange counted (kt_conn_count_error -> c->alog_hint), or by the
 * site's default.  Nothing here sleeps or waits: kt_log_submit() counts a
 * record it has no room for as dropped.
 *
 * Context: the connection's work or tasklet; kt_alog_route() with BHs off
 * (it copies, and allocates without sleeping).
 */

#include <linux/ktime.h>
#include <linux/random.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "kt_conn.h"

/* How an exchange that counted an error of kind KT_E_* ended. */
static const u8 kt_alog_ends[KT_E_MAX] = {
	[KT_E_PARSE] = KTCPVS_END_REFUSED,
	[KT_E_HEADER_TIMEOUT] = KTCPVS_END_TIMEOUT,
	[KT_E_BLOCKED] = KTCPVS_END_REFUSED,
	[KT_E_REDIRECT] = KTCPVS_END_REFUSED,
	[KT_E_NO_ROUTE] = KTCPVS_END_REFUSED,
	[KT_E_UNAVAILABLE] = KTCPVS_END_REFUSED,
	[KT_E_CONNECT] = KTCPVS_END_SERVER_ERROR,
	[KT_E_BAD_GATEWAY] = KTCPVS_END_SERVER_ERROR,
	[KT_E_BACKEND_TIMEOUT] = KTCPVS_END_TIMEOUT,
	[KT_E_BACKEND_RESET] = KTCPVS_END_SERVER_ERROR,
	[KT_E_CLIENT_RESET] = KTCPVS_END_CLIENT_ABORT,
	[KT_E_LIMIT] = KTCPVS_END_REFUSED,
	[KT_E_SOURCE_LIMIT] = KTCPVS_END_REFUSED,
	[KT_E_RETRY] = KT_ALOG_NO_HINT,		/* the exchange goes on */
	[KT_E_LOCAL] = KTCPVS_END_LOCAL,
	[KT_E_ANSWERED] = KTCPVS_END_ANSWERED,
};

/* KTCPVS_END_* for an error of @kind, or KT_ALOG_NO_HINT. */
u8 kt_alog_end_of(int kind)
{
	return kind >= 0 && kind < KT_E_MAX ? kt_alog_ends[kind] :
	       KT_ALOG_NO_HINT;
}

/* Is this request of @svc to be logged?  The service's mode, then a draw. */
static bool kt_alog_wanted(const struct kt_service *svc)
{
	switch (svc->log_mode) {
	case KT_LOG_ON:
		return true;
	case KT_LOG_SAMPLE:
		return svc->log_sample <= 1 ||
		       !get_random_u32_below(svc->log_sample);
	default:
		return false;
	}
}

static void kt_alog_addr(u8 *family, u8 addr[16], __u16 *port,
			 const union kt_addr *ss)
{
	if (ss->sa.sa_family == AF_INET) {
		const struct sockaddr_in *sin = &ss->in;

		*family = 4;
		memcpy(addr, &sin->sin_addr, 4);
		memset(addr + 4, 0, 12);
		*port = ntohs(sin->sin_port);
	} else {
		const struct sockaddr_in6 *sin6 = &ss->in6;

		*family = 6;
		memcpy(addr, &sin6->sin6_addr, 16);
		*port = ntohs(sin6->sin6_port);
	}
}

/*
 * The first bytes of a request are in up.buf: decide whether it is logged
 * and, if so, note when it began.  Called once per request, before it is
 * parsed; c->svc is set.  Nothing is allocated here: a head that never
 * completes costs no record buffer (its record, if it ends, is built on
 * the stack by kt_alog_emit).
 */
void kt_alog_begin(struct kt_conn *c)
{
	c->alog_decided = true;
	c->alog_routed = false;
	c->alog_status = 0;
	if (!kt_alog_wanted(c->svc) || !kt_log_active(c->ktn))
		return;
	c->alog_on = true;
	c->alog_t0 = ktime_get_ns();
	c->alog_time_ns = ktime_get_real_ns();
}

/* The fields every record has, @r zeroed first. */
static void kt_alog_rec_init(struct kt_conn *c, struct ktcpvs_log_rec *r)
{
	memset(r, 0, sizeof(*r));
	r->time_ns = c->alog_time_ns;
	kt_alog_addr(&r->client_family, r->client, &r->client_port, &c->peer);
}

/*
 * The request was matched: take the connection's record buffer (the first
 * routed request of the connection allocates it, without sleeping: this
 * runs with preemption off) and copy what the record needs of the head
 * (host, path, an extension method's name) before the head is sent and
 * leaves the buffer.  @mr's slices point into the parse scratch and
 * up.buf.  No buffer: the record is counted as dropped.
 */
void kt_alog_route(struct kt_conn *c, const struct kt_match_req *mr,
		   const struct kt_match_result *res)
{
	const struct kt_http_msg *m = &c->up.ms->msg;
	struct kt_alog *a = c->alog;
	struct ktcpvs_log_rec *r;
	u32 hl, pl, ml;

	if (!c->alog_on)
		return;
	if (!a) {
		a = kmalloc(sizeof(*a), GFP_NOWAIT | __GFP_ACCOUNT | __GFP_NOWARN);
		if (!a) {
			c->alog_on = false;
			kt_log_drop(c->ktn);
			return;
		}
		kt_alloc_inc();
		c->alog = a;
	}
	c->alog_routed = true;
	a->pool = NULL;
	r = &a->rec;
	kt_alog_rec_init(c, r);
	hl = min_t(u32, mr->host.len, KT_ALOG_HOST_MAX);
	pl = min_t(u32, mr->path.len, KTCPVS_LOG_PATH_MAX);
	ml = m->method == KT_HTTP_M_OTHER ?
	     min_t(u32, mr->method.len, KT_ALOG_METHOD_MAX) : 0;
	if (hl)
		memcpy(a->str, mr->host.ptr, hl);
	if (pl)
		memcpy(a->str + hl, mr->path.ptr, pl);
	if (ml)
		memcpy(a->str + hl + pl, mr->method.ptr, ml);
	r->host_len = hl;
	r->path_len = pl;
	r->method_len = ml;
	r->method = m->method;
	r->version = m->version;
	r->rule_line = res->rule == KT_RULES_NONE ? 0 : res->line;
	if (res->action == KT_ACTION_ROUTE)
		a->pool = &c->cfg->pools[res->pool];
}

/* The request is scheduled on @srv. */
void kt_alog_server(struct kt_conn *c, const struct kt_server *srv)
{
	struct ktcpvs_log_rec *r;

	if (!c->alog_on || !c->alog_routed)
		return;
	r = &c->alog->rec;
	kt_alog_addr(&r->server_family, r->server, &r->server_port, &srv->addr);
	r->connect_us = 0;	/* a new server: its own connect, if any */
}

/* Microseconds since the request's first byte, into *@us (once). */
static void kt_alog_mark(struct kt_conn *c, u32 *us)
{
	u64 d;

	if (*us)
		return;
	d = div_u64(ktime_get_ns() - c->alog_t0, NSEC_PER_USEC);
	*us = max_t(u64, min_t(u64, d, U32_MAX), 1);
}

/* The backend connection is ready. */
void kt_alog_mark_connect(struct kt_conn *c)
{
	if (c->alog_on && c->alog_routed)
		kt_alog_mark(c, &c->alog->rec.connect_us);
}

/* The response's first byte arrived. */
void kt_alog_mark_first_byte(struct kt_conn *c)
{
	if (c->alog_on && c->alog_routed)
		kt_alog_mark(c, &c->alog->rec.first_byte_us);
}

/*
 * The exchange is over, as @end (KTCPVS_END_*): the record goes to the
 * namespace's access log, and the request has no record any more.  A
 * request that was never routed (refused by the parser, timed out, the
 * client gone mid-head) has its record built here, without strings.
 */
void kt_alog_emit(struct kt_conn *c, unsigned int end)
{
	struct kt_log_strings s = { };
	struct ktcpvs_log_rec early;
	struct ktcpvs_log_rec *r;
	struct kt_alog *a = NULL;
	u64 d;

	c->alog_on = false;
	if (c->alog_routed) {
		a = c->alog;
		r = &a->rec;
	} else {
		r = &early;
		kt_alog_rec_init(c, r);
	}
	d = div_u64(ktime_get_ns() - c->alog_t0, NSEC_PER_USEC);
	r->total_us = max_t(u64, min_t(u64, d, U32_MAX), 1);
	r->bytes_in = c->rq_in;
	r->bytes_out = c->rq_out;
	r->status = c->alog_status;
	r->end = end;
	if (c->svc) {
		s.service.ptr = (const u8 *)c->svc->name;
		s.service.len = c->svc->name_len;
	}
	if (a && a->pool) {
		s.pool.ptr = (const u8 *)a->pool->name;
		s.pool.len = a->pool->name_len;
	}
	if (a) {
		s.host.ptr = a->str;
		s.host.len = r->host_len;
		s.path.ptr = a->str + r->host_len;
		s.path.len = r->path_len;
		s.method.ptr = a->str + r->host_len + r->path_len;
		s.method.len = r->method_len;
	}
	kt_log_submit(c->ktn, r, &s);
}

/* The connection goes: its record buffer with it.  Release work. */
void kt_alog_free(struct kt_conn *c)
{
	if (c->alog) {
		kfree(c->alog);
		kt_alloc_dec();
		c->alog = NULL;
	}
}

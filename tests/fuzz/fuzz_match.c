// SPDX-License-Identifier: GPL-2.0
/*
 * fuzz_match - libFuzzer harness for the rule-table validator and matcher
 * (kmod/core/match.c).
 *
 * Input: blob || view || u16 view_len (little-endian, last two bytes).  The
 * blob is what user space hands the kernel; the view describes one request:
 *
 *   view[0]      bits 0-1 client family (0 none, 1 IPv4, 2 IPv6, 3 IPv4-
 *                mapped IPv6), bit 2 no query slice at all (NULL, 0),
 *                bits 3-6 trace capacity, bit 7 blob as is (else its size
 *                is rounded to words and patched into the header)
 *   view[1..17)  client address bytes (missing ones are 0)
 *   the rest     NUL-separated slices: method, host, path, query, then
 *                header name/value pairs (at most FM_MAX_HEADERS)
 *
 * kt_rules_validate() must refuse the blob or accept it; on accept every
 * service is matched with kt_match() and kt_match_trace(), and every view of
 * the configuration is read.  The blob, each request slice and the scratch
 * area are copies of exactly their size, so AddressSanitizer catches any
 * read past them; after each match the scratch must be all zero again and
 * the result must make sense (rule in range, pool in range for a route,
 * statuses in their sets, a redirect location non-empty, inside the blob's
 * strings and free of control bytes and spaces, an answer's body at most
 * 4096 bytes inside the blob), and every accepted configuration must keep
 * the validator's bounds (counts, service flags, limits, timeouts, log
 * modes; pools' health checks and persistence; servers' persistence ids).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_assert.h"
#include "match.h"

#define FM_MAX_HEADERS	16
#define FM_MAX_SLICES	(4 + 2 * FM_MAX_HEADERS)
#define FM_MAX_SERVICES	8
#define FM_TRACE_CAP	8

/* An exact-size heap copy (never NULL: malloc(0) is avoided). */
static uint8_t *fm_dup(const uint8_t *p, size_t n)
{
	uint8_t *d = malloc(n ? n : 1);

	FZ_ASSERT(d);
	if (n)
		memcpy(d, p, n);
	return d;
}

static void fm_scratch_zero(const u32 *s, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		FZ_ASSERT(s[i] == 0);
}

static void fm_check_result(const struct kt_rules *r, u32 svc, u32 rule,
			    const struct kt_match_result *res,
			    const uint8_t *blob, size_t len)
{
	struct kt_rules_service_info si;

	kt_rules_service(r, svc, &si);
	FZ_ASSERT(rule == res->rule);
	if (rule == KT_RULES_NONE) {
		FZ_ASSERT(res->action == KT_ACTION_NONE);
		return;
	}
	FZ_ASSERT(rule < si.nrules);
	FZ_ASSERT(res->action >= KT_ACTION_ROUTE &&
		  res->action <= KT_ACTION_ANSWER);
	/* the location words are a redirect's location or an answer's body */
	if (res->action != KT_ACTION_REDIRECT)
		FZ_ASSERT(res->location.len == 0);
	if (res->action != KT_ACTION_ANSWER)
		FZ_ASSERT(res->body.len == 0);
	if (res->action == KT_ACTION_ANSWER) {
		FZ_ASSERT(res->status >= KT_RULES_ANSWER_MIN &&
			  res->status <= KT_RULES_ANSWER_MAX &&
			  res->status != 101);
		FZ_ASSERT(res->body.len <= KT_RULES_MAX_ANSWER_BODY);
		FZ_ASSERT(res->body.ptr >= blob);
		FZ_ASSERT(res->body.ptr + res->body.len <= blob + len);
	}
	if (res->action == KT_ACTION_ROUTE) {
		FZ_ASSERT(res->pool < kt_rules_npools(r));
		FZ_ASSERT(res->status == 0);
	}
	if (res->action == KT_ACTION_BLOCK)
		FZ_ASSERT(res->status >= 400 && res->status <= 599);
	if (res->action == KT_ACTION_REDIRECT) {
		u32 i;

		FZ_ASSERT(res->status == 301 || res->status == 302 ||
			  res->status == 303 || res->status == 307 ||
			  res->status == 308);
		/* it goes into an answer's Location field */
		FZ_ASSERT(res->location.len > 0);
		FZ_ASSERT(res->location.ptr >= blob);
		FZ_ASSERT(res->location.ptr + res->location.len <= blob + len);
		for (i = 0; i < res->location.len; i++)
			FZ_ASSERT(res->location.ptr[i] > 0x20 &&
				  res->location.ptr[i] != 0x7f);
	}
}

/* What the validator promises about the service options. */
static void fm_check_service(const struct kt_rules_service_info *si)
{
	static const u32 max[KT_LIMIT_COUNT] = {
		KT_RULES_MAX_REQUEST_LINE, KT_RULES_MAX_HEADER_SIZE,
		KT_RULES_MAX_HEADERS, KT_RULES_MAX_CONNS, KT_RULES_MAX_CONNS,
		KT_RULES_MAX_SOURCE_RATE, KT_RULES_MAX_BACKLOG,
	};
	u32 k;

	FZ_ASSERT(!(si->flags & ~KT_SERVICE_FLAGS));
	FZ_ASSERT((si->flags & KT_SERVICE_XFF_MASK) != KT_SERVICE_XFF_MASK);
	FZ_ASSERT(!((si->flags & KT_SERVICE_RAW) &&
		    (si->flags & KT_SERVICE_XFF_MASK)));
	for (k = 0; k < KT_LIMIT_COUNT; k++)
		FZ_ASSERT(si->limits[k] <= max[k]);
	for (k = 0; k < KT_TIMEOUT_COUNT; k++)
		FZ_ASSERT(si->timeouts_ms[k] <= KT_RULES_MAX_TIMEOUT_MS);
	FZ_ASSERT(si->log_mode <= KT_LOG_SAMPLE);
	if (si->log_mode == KT_LOG_SAMPLE)
		FZ_ASSERT(si->log_sample >= KT_RULES_LOG_SAMPLE_MIN &&
			  si->log_sample <= KT_RULES_LOG_SAMPLE_MAX);
	else
		FZ_ASSERT(si->log_sample == 0);
}

static int fm_tchar(u8 c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A slice the kernel will read: inside the blob, of the promised bytes. */
static void fm_check_slice(const struct kt_match_slice *sl, const uint8_t *blob,
			   size_t len)
{
	u32 i;
	volatile u8 sink = 0;

	FZ_ASSERT(sl->ptr >= blob && sl->ptr + sl->len <= blob + len);
	for (i = 0; i < sl->len; i++)
		sink ^= sl->ptr[i];
	(void)sink;
}

/* What the validator promises about a pool's check and persistence. */
static void fm_check_pool(const struct kt_rules_pool_info *pi,
			  const uint8_t *blob, size_t len)
{
	const struct kt_rules_check *c = &pi->check;
	const struct kt_rules_persist *p = &pi->persist;
	u32 i;

	FZ_ASSERT(c->kind <= KT_CHECK_HTTP);
	if (c->kind == KT_CHECK_NONE) {
		FZ_ASSERT(!c->interval_ms && !c->timeout_ms && !c->rise &&
			  !c->fall && !c->request.len && !c->host.len &&
			  !c->expect_lo && !c->expect_hi);
	} else {
		FZ_ASSERT(c->interval_ms >= KT_RULES_CHECK_INTERVAL_MIN &&
			  c->interval_ms <= KT_RULES_CHECK_INTERVAL_MAX);
		FZ_ASSERT(c->timeout_ms >= KT_RULES_CHECK_TIMEOUT_MIN &&
			  c->timeout_ms <= KT_RULES_CHECK_TIMEOUT_MAX &&
			  c->timeout_ms <= c->interval_ms);
		FZ_ASSERT(c->rise >= 1 && c->rise <= KT_RULES_CHECK_COUNT_MAX);
		FZ_ASSERT(c->fall >= 1 && c->fall <= KT_RULES_CHECK_COUNT_MAX);
	}
	if (c->kind == KT_CHECK_TCP)
		FZ_ASSERT(!c->request.len && !c->host.len && !c->expect_lo &&
			  !c->expect_hi);
	if (c->kind == KT_CHECK_HTTP) {
		/* "METHOD /path": it goes onto the wire as is */
		FZ_ASSERT(c->request.len >= 3 &&
			  c->request.len <= KT_RULES_CHECK_REQUEST_MAX);
		fm_check_slice(&c->request, blob, len);
		for (i = 0; i < c->request.len && c->request.ptr[i] != ' '; i++)
			FZ_ASSERT(fm_tchar(c->request.ptr[i]));
		FZ_ASSERT(i > 0 && i + 1 < c->request.len &&
			  c->request.ptr[i + 1] == '/');
		for (i++; i < c->request.len; i++)
			FZ_ASSERT(c->request.ptr[i] > 0x20 &&
				  c->request.ptr[i] < 0x7f);
		FZ_ASSERT(c->host.len <= KT_RULES_CHECK_HOST_MAX);
		fm_check_slice(&c->host, blob, len);
		for (i = 0; i < c->host.len; i++)
			FZ_ASSERT(c->host.ptr[i] > 0x20 && c->host.ptr[i] < 0x7f);
		FZ_ASSERT(c->expect_lo >= 100 && c->expect_lo <= c->expect_hi &&
			  c->expect_hi <= 599);
	}
	FZ_ASSERT(p->kind <= KT_PERSIST_SOURCE);
	if (p->kind != KT_PERSIST_COOKIE)
		FZ_ASSERT(!p->cookie.len);
	if (p->kind != KT_PERSIST_SOURCE)
		FZ_ASSERT(!p->source_timeout_ms);
	if (p->kind == KT_PERSIST_COOKIE) {
		/* NAME=value goes into a Set-Cookie field */
		FZ_ASSERT(p->cookie.len >= 1 && p->cookie.len <= KT_RULES_COOKIE_MAX);
		fm_check_slice(&p->cookie, blob, len);
		for (i = 0; i < p->cookie.len; i++)
			FZ_ASSERT(fm_tchar(p->cookie.ptr[i]));
	}
	if (p->kind == KT_PERSIST_SOURCE)
		FZ_ASSERT(p->source_timeout_ms >= KT_RULES_PERSIST_TIMEOUT_MIN &&
			  p->source_timeout_ms <= KT_RULES_PERSIST_TIMEOUT_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kt_match_slice sl[FM_MAX_SLICES];
	struct kt_match_header hdr[FM_MAX_HEADERS];
	uint8_t *copies[FM_MAX_SLICES];
	struct kt_match_req req;
	struct kt_match_result res, res2;
	struct kt_rules_service_info si;
	struct kt_rules_pool_info pi;
	struct kt_rules_server_info sv;
	struct kt_rules r;
	const uint8_t *view, *p, *e;
	const char *why = NULL;
	u32 preds[FM_TRACE_CAP], npreds, nsl = 0, i, k, svc, rule, rule2;
	uint8_t *blob;
	u32 *scratch;
	size_t vlen, blen;
	uint8_t cfg = 0;

	if (size < 2)
		return 0;
	vlen = data[size - 2] | (size_t)data[size - 1] << 8;
	if (vlen > size - 2)
		vlen = size - 2;
	blen = size - 2 - vlen;
	view = data + blen;

	/*
	 * The blob: exact size; malloc's alignment covers the 4 needed.
	 * Unless view bit 7 says "as is", its size is rounded down to whole
	 * words and written into the header's total-size word, so that
	 * mutations which insert or drop bytes still reach the structures
	 * behind the header instead of all failing the size check.
	 */
	if (vlen && !(view[0] & 0x80) && blen >= 12) {
		uint32_t total;

		blen &= ~(size_t)3;
		total = (uint32_t)blen;
		blob = fm_dup(data, blen);
		memcpy(blob + 8, &total, 4);
	} else {
		blob = fm_dup(data, blen);
	}
	if (kt_rules_validate(&r, blob, blen, &why)) {
		FZ_ASSERT(why != NULL);
		free(blob);
		return 0;
	}

	/* Configuration views: every index the counts allow. */
	FZ_ASSERT(kt_rules_nservices(&r) <= KT_RULES_MAX_SERVICES);
	FZ_ASSERT(kt_rules_npools(&r) <= KT_RULES_MAX_POOLS);
	FZ_ASSERT(r.nservers <= KT_RULES_MAX_SERVERS);
	FZ_ASSERT(kt_rules_max_conns(&r) <= KT_RULES_MAX_NS_CONNS);
	for (i = 0; i < kt_rules_npools(&r); i++) {
		kt_rules_pool(&r, i, &pi);
		FZ_ASSERT(pi.scheduler < KT_SCHED_COUNT);
		fm_check_pool(&pi, blob, blen);
		for (k = 0; k < pi.nservers; k++) {
			kt_rules_server(&r, pi.first_server + k, &sv);
			FZ_ASSERT(sv.id != 0);
		}
	}

	/* The request view. */
	memset(&req, 0, sizeof(req));
	if (vlen) {
		cfg = view[0];
		memcpy(req.addr, view + 1, vlen - 1 < 16 ? vlen - 1 : 16);
		switch (cfg & 3) {
		case 1:
			req.family = KT_MATCH_AF_INET;
			memset(req.addr + 4, 0, 12);
			break;
		case 2:
			req.family = KT_MATCH_AF_INET6;
			break;
		case 3:
			req.family = KT_MATCH_AF_INET6;
			memmove(req.addr + 12, req.addr, 4);
			memset(req.addr, 0, 10);
			req.addr[10] = req.addr[11] = 0xff;
			break;
		}
		p = view + (vlen > 17 ? 17 : vlen);
		e = view + vlen;
		while (p < e && nsl < FM_MAX_SLICES) {
			const uint8_t *z = memchr(p, 0, e - p);
			size_t n = z ? (size_t)(z - p) : (size_t)(e - p);

			copies[nsl] = fm_dup(p, n);
			sl[nsl].ptr = copies[nsl];
			sl[nsl].len = n;
			nsl++;
			p += n + 1;
		}
	}
	if (nsl > 0)
		req.method = sl[0];
	if (nsl > 1)
		req.host = sl[1];
	if (nsl > 2)
		req.path = sl[2];
	if (nsl > 3 && !(cfg & 4))
		req.query = sl[3];
	for (i = 4; i + 1 < nsl; i += 2) {
		hdr[req.nheaders].name = sl[i];
		hdr[req.nheaders].value = sl[i + 1];
		req.nheaders++;
	}
	req.headers = req.nheaders ? hdr : NULL;

	/* Scratch: exactly the words asked for, zeroed once. */
	k = kt_match_scratch_words(&r);
	scratch = malloc(k ? (size_t)k * 4 : 4);
	FZ_ASSERT(scratch);
	kt_match_scratch_init(scratch, k);
	fm_scratch_zero(scratch, k);

	for (svc = 0; svc < kt_rules_nservices(&r) && svc < FM_MAX_SERVICES;
	     svc++) {
		kt_rules_service(&r, svc, &si);
		fm_check_service(&si);
		memset(&res, 0xa5, sizeof(res));
		rule = kt_match(&r, svc, &req, scratch, &res);
		fm_scratch_zero(scratch, k);
		fm_check_result(&r, svc, rule, &res, blob, blen);

		memset(&res2, 0x5a, sizeof(res2));
		npreds = 0xdeadbeef;
		rule2 = kt_match_trace(&r, svc, &req, scratch, &res2, preds,
				       (cfg >> 3) % (FM_TRACE_CAP + 1),
				       &npreds);
		fm_scratch_zero(scratch, k);
		fm_check_result(&r, svc, rule2, &res2, blob, blen);
		FZ_ASSERT(npreds != 0xdeadbeef);
		/* tracing must not change the decision */
		FZ_ASSERT(rule2 == rule);
		FZ_ASSERT(res2.action == res.action);
		if (rule != KT_RULES_NONE && res.action == KT_ACTION_ROUTE)
			FZ_ASSERT(res2.pool == res.pool);
		if (rule != KT_RULES_NONE && res.action == KT_ACTION_ANSWER)
			FZ_ASSERT(res2.body.ptr == res.body.ptr &&
				  res2.body.len == res.body.len &&
				  res2.status == res.status);
	}

	free(scratch);
	for (i = 0; i < nsl; i++)
		free(copies[i]);
	free(blob);
	return 0;
}

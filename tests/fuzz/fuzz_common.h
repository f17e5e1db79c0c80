/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fuzz_common.h - shared driver for the libFuzzer harnesses of the HTTP
 * parser (kmod/core/http.c).
 *
 * The first input byte configures the run (limits, request method, mode),
 * the rest is the byte stream.  Each harness parses the stream like the
 * kernel data path does - head over a growing contiguous buffer, body by
 * the streaming machine, pipelined messages one after another - three
 * times: all at once, in small steps, and cut at pseudo-random offsets.
 * Every piece handed to the parser is copied into a buffer of exactly its
 * size, so AddressSanitizer catches any read past what has "arrived".  The
 * three transcripts must be identical (split invariance), and the results
 * must satisfy the invariants checked in fz_check_msg().
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_assert.h"
#include "http.h"

#define FZ_MAX_MSGS	32

struct fz_result {
	int rc;
	uint16_t status;
	const char *reason;
	uint64_t err_off;
	uint32_t head_len, flags, nfields;
	uint8_t framing, version, method, form;
	uint64_t cl, decoded, consumed, start;
	uint64_t digest;	/* fields, path, host, target, query */
};

struct fz_transcript {
	struct fz_result r[FZ_MAX_MSGS];
	int n;
};

struct fz_feed {
	size_t total, avail;
	size_t step;		/* > 0: fixed step */
	uint32_t seed;		/* else pseudo-random cuts */
};

static inline uint64_t fz_hash(uint64_t h, const void *p, size_t n)
{
	const uint8_t *s = p;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ULL;
	return (h ^ n) * 0x100000001b3ULL;
}

static inline int fz_more(struct fz_feed *f)
{
	size_t add;

	if (f->avail >= f->total)
		return 0;
	if (f->step) {
		add = f->step;
	} else {
		f->seed = f->seed * 1103515245u + 12345u;
		add = 1 + (f->seed >> 16) % 97;
	}
	f->avail = f->avail + add > f->total ? f->total : f->avail + add;
	return 1;
}

/* A private copy of exactly n bytes: reads beyond it are ASan errors. */
static inline uint8_t *fz_copy(const uint8_t *p, size_t n)
{
	uint8_t *c = malloc(n ? n : 1);

	FZ_ASSERT(c);
	if (n)
		memcpy(c, p, n);
	return c;
}

static void fz_check_msg(const struct kt_http_msg *m, size_t len)
{
	uint32_t i;

	FZ_ASSERT(m->head_len <= len && m->head_len <= m->lim.head);
	FZ_ASSERT(m->nfields <= m->lim.fields);
	FZ_ASSERT(m->out_len <= m->out_cap);
	for (i = 0; i < m->nfields; i++) {
		const struct kt_http_field *f = &m->fields[i];

		FZ_ASSERT(f->name_len > 0);
		FZ_ASSERT(f->name_off + f->name_len < f->value_off + 1);
		FZ_ASSERT(f->value_off + f->value_len <= m->head_len);
	}
	if (m->flags & KT_HTTP_RESPONSE) {
		FZ_ASSERT(m->status >= 100 && m->status <= 599);
		return;
	}
	FZ_ASSERT(m->version == 10 || m->version == 11);
	FZ_ASSERT(m->target_off + m->target_len <= m->head_len);
	FZ_ASSERT(m->path_len <= m->target_len);
	FZ_ASSERT(m->path_off + m->path_len <= m->out_len);
	if (m->flags & KT_HTTP_HAS_HOST) {
		FZ_ASSERT(m->host_len <= KT_HTTP_HOST_MAX);
		FZ_ASSERT(m->host_off + m->host_len <= m->out_len);
	}
	if (m->form == KT_HTTP_T_ORIGIN || m->form == KT_HTTP_T_ABSOLUTE) {
		/* a normalized path is absolute and has no dot segments */
		const uint8_t *p = m->out + m->path_off;
		uint32_t n = m->path_len, j;

		FZ_ASSERT(n >= 1 && p[0] == '/');
		for (j = 0; j < n; j++) {
			FZ_ASSERT(p[j] != 0 && p[j] != '?');
			if (p[j] == '/' && j + 1 < n && p[j + 1] == '.')
				FZ_ASSERT(!(j + 2 == n || p[j + 2] == '/' ||
					    (p[j + 2] == '.' &&
					     (j + 3 == n || p[j + 3] == '/'))));
		}
	}
	if (m->framing == KT_HTTP_FR_CHUNKED)
		FZ_ASSERT(!(m->flags & KT_HTTP_HAS_CL));
	/* CONNECT has no content (RFC 9110 9.3.6): never a body framing */
	if (m->method == KT_HTTP_M_CONNECT) {
		FZ_ASSERT(m->framing == KT_HTTP_FR_NONE);
		FZ_ASSERT(!(m->flags & (KT_HTTP_HAS_CL | KT_HTTP_HAS_TE)));
	}
}

static uint64_t fz_digest(const struct kt_http_msg *m, const uint8_t *buf)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	uint32_t i;

	for (i = 0; i < m->nfields; i++) {
		h = fz_hash(h, buf + m->fields[i].name_off,
			    m->fields[i].name_len);
		h = fz_hash(h, buf + m->fields[i].value_off,
			    m->fields[i].value_len);
	}
	if (m->flags & KT_HTTP_RESPONSE)
		return fz_hash(h, &m->status, sizeof(m->status));
	h = fz_hash(h, m->out + m->path_off, m->path_len);
	h = fz_hash(h, m->out + m->host_off, m->host_len);
	h = fz_hash(h, buf + m->target_off, m->target_len);
	h = fz_hash(h, buf + m->query_off, m->query_len);
	return h;
}

/*
 * Parse every message of data[0..size) with the feed @f; record one result
 * per message.
 */
static void fz_run(const uint8_t *data, size_t size, struct fz_feed f,
		   const struct kt_http_limits *lim, int response,
		   unsigned int req_method, struct fz_transcript *t)
{
	static struct kt_http_field fields[256];
	static uint8_t out[1 << 17];
	struct kt_http_msg m;
	struct kt_http_body b;
	size_t start = 0, pos, used;
	uint8_t *copy;
	int rc;

	memset(t, 0, sizeof(*t));
	f.total = size;
	f.avail = 0;
	fz_more(&f);
	while (start < size && t->n < FZ_MAX_MSGS) {
		struct fz_result *r = &t->r[t->n++];

		r->start = start;
		if (response)
			kt_http_resp_init(&m, lim, fields, 256, req_method);
		else
			kt_http_req_init(&m, lim, fields, 256, out,
					 sizeof(out));
		copy = NULL;
		for (;;) {
			free(copy);
			copy = fz_copy(data + start, f.avail - start);
			rc = kt_http_parse(&m, copy, f.avail - start);
			if (rc != KT_HTTP_AGAIN || !fz_more(&f))
				break;
		}
		r->rc = rc;
		if (rc == KT_HTTP_ERROR) {
			FZ_ASSERT(m.reason && m.status >= 400);
			FZ_ASSERT(m.err_off <= f.avail - start);
			r->status = m.status;
			r->reason = m.reason;
			r->err_off = start + m.err_off;
			free(copy);
			return;
		}
		if (rc == KT_HTTP_AGAIN) {
			r->reason = kt_http_idle(&m) ? "idle" : "incomplete";
			free(copy);
			return;
		}
		fz_check_msg(&m, f.avail - start);
		r->head_len = m.head_len;
		r->flags = m.flags;
		r->nfields = m.nfields;
		r->framing = m.framing;
		r->version = m.version;
		r->method = m.method;
		r->form = m.form;
		r->cl = m.content_length;
		r->digest = fz_digest(&m, copy);
		free(copy);

		kt_http_body_init(&b, &m);
		pos = start + m.head_len;
		for (;;) {
			copy = fz_copy(data + pos, f.avail - pos);
			rc = kt_http_body_feed(&b, copy, f.avail - pos, &used);
			free(copy);
			FZ_ASSERT(used <= f.avail - pos);
			pos += used;
			if (rc != KT_HTTP_AGAIN)
				break;
			FZ_ASSERT(pos == f.avail);
			if (!fz_more(&f)) {
				rc = kt_http_body_eof(&b);
				break;
			}
		}
		if (rc == KT_HTTP_ERROR) {
			r->rc = rc;
			r->status = b.status;
			r->reason = b.reason;
			r->err_off = pos;
			return;
		}
		FZ_ASSERT(b.decoded <= pos - start);
		if (m.framing == KT_HTTP_FR_LENGTH)
			FZ_ASSERT(b.decoded == m.content_length);
		r->decoded = b.decoded;
		r->consumed = pos - start;
		start = pos;
		if (m.framing == KT_HTTP_FR_TUNNEL ||
		    m.framing == KT_HTTP_FR_CLOSE)
			return;
	}
}

static void fz_same(const struct fz_transcript *a,
		    const struct fz_transcript *b)
{
	int i;

	FZ_ASSERT(a->n == b->n);
	for (i = 0; i < a->n; i++) {
		const struct fz_result *x = &a->r[i], *y = &b->r[i];

		FZ_ASSERT(x->rc == y->rc);
		FZ_ASSERT(x->status == y->status);
		FZ_ASSERT(x->reason == y->reason ||
			  (x->reason && y->reason &&
			   !strcmp(x->reason, y->reason)));
		FZ_ASSERT(x->err_off == y->err_off);
		FZ_ASSERT(x->head_len == y->head_len);
		FZ_ASSERT(x->flags == y->flags);
		FZ_ASSERT(x->nfields == y->nfields);
		FZ_ASSERT(x->framing == y->framing);
		FZ_ASSERT(x->version == y->version);
		FZ_ASSERT(x->method == y->method);
		FZ_ASSERT(x->form == y->form);
		FZ_ASSERT(x->cl == y->cl);
		FZ_ASSERT(x->decoded == y->decoded);
		FZ_ASSERT(x->consumed == y->consumed);
		FZ_ASSERT(x->start == y->start);
		FZ_ASSERT(x->digest == y->digest);
	}
}

/* Limits from the config byte: defaults, or small ones to reach the edges. */
static void fz_limits(uint8_t cfg, struct kt_http_limits *lim)
{
	kt_http_limits_init(lim);
	if (cfg & 0x10) {
		lim->request_line = 24 + (cfg & 0x7) * 8;
		lim->header_line = 16 + (cfg & 0x3) * 16;
		lim->fields = 1 + (cfg & 0x7);
		lim->head = 128 + (cfg & 0x3) * 64;
	}
	if (cfg & 0x20)
		lim->flags &= ~KT_HTTP_F_MERGE_SLASHES;
}

/* Run the stream whole, in small steps and at random cuts; compare. */
static __attribute__((unused)) void fz_all(const uint8_t *data, size_t size,
					   int response)
{
	static struct fz_transcript whole, steps, cuts;
	struct kt_http_limits lim;
	struct fz_feed f = { 0 };
	unsigned int req_method;
	uint8_t cfg;

	if (size < 1)
		return;
	cfg = data[0];
	data++;
	size--;
	fz_limits(cfg, &lim);
	req_method = (cfg >> 6) == 1 ? KT_HTTP_M_HEAD :
		     (cfg >> 6) == 2 ? KT_HTTP_M_CONNECT : KT_HTTP_M_GET;

	f.step = size;
	fz_run(data, size, f, &lim, response, req_method, &whole);
	f.step = size <= 256 ? 1 : 1 + size / 64;
	fz_run(data, size, f, &lim, response, req_method, &steps);
	fz_same(&whole, &steps);
	f.step = 0;
	f.seed = (uint32_t)size * 2654435761u ^ cfg;
	fz_run(data, size, f, &lim, response, req_method, &cuts);
	fz_same(&whole, &cuts);
}

#endif /* FUZZ_COMMON_H */

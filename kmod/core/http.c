// SPDX-License-Identifier: GPL-2.0
/*
 * http.c - strict, incremental HTTP/1.x parser.  See http.h for the model
 * and docs/http.md for every rule and refusal.
 *
 * Layout: character classes, helpers (hosts, paths, field values), the
 * head parser (one resumable function: a state per place a line can be cut),
 * then the body framing machine and the lookups.
 */
#include "kt_compat.h"
#include "http.h"

#ifndef __always_inline
#define __always_inline	inline __attribute__((__always_inline__))
#endif

#define KT_C_TCHAR	0x01	/* token character (RFC 9110 5.6.2) */
#define KT_C_FVAL	0x02	/* field value: VCHAR, obs-text, SP, HTAB */
#define KT_C_TARGET	0x04	/* pchar / "/" / "?" without '%' */
#define KT_C_HEX	0x08	/* HEXDIG */
#define KT_C_UNRES	0x10	/* unreserved (RFC 3986 2.3) */
#define KT_C_REGNAME	0x20	/* reg-name: unreserved / sub-delims */
#define KT_C_QDTEXT	0x40	/* qdtext (RFC 9110 5.6.4) */
#define KT_C_PLAIN	0x80	/* KT_C_TARGET but not '?' */

static const u8 kt_http_cc[256] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,	/* 0x00 */
	0x00, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,	/* 0x08 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,	/* 0x10 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,	/* 0x18 */
	0x42, 0xe7, 0x02, 0x43, 0xe7, 0x43, 0xe7, 0xe7,	/* 0x20 */
	0xe6, 0xe6, 0xe7, 0xe7, 0xe6, 0xf7, 0xf7, 0xc6,	/* 0x28 */
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,	/* 0x30 */
	0xff, 0xff, 0xc6, 0xe6, 0x42, 0xe6, 0x42, 0x46,	/* 0x38 */
	0xc6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf7,	/* 0x40 */
	0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7,	/* 0x48 */
	0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7,	/* 0x50 */
	0xf7, 0xf7, 0xf7, 0x42, 0x02, 0x42, 0x43, 0xf7,	/* 0x58 */
	0x43, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf7,	/* 0x60 */
	0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7,	/* 0x68 */
	0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7, 0xf7,	/* 0x70 */
	0xf7, 0xf7, 0xf7, 0x42, 0x43, 0x42, 0xf7, 0x00,	/* 0x78 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0x80 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0x88 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0x90 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0x98 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xa0 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xa8 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xb0 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xb8 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xc0 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xc8 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xd0 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xd8 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xe0 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xe8 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xf0 */
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,	/* 0xf8 */
};

static const u8 kt_http_lower[256] = {
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
	0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
	0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23,
	0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
	0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b,
	0x3c, 0x3d, 0x3e, 0x3f, 0x40, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
	0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0x73,
	0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f,
	0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b,
	0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77,
	0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d, 0x7e, 0x7f, 0x80, 0x81, 0x82, 0x83,
	0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f,
	0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b,
	0x9c, 0x9d, 0x9e, 0x9f, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
	0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 0xb0, 0xb1, 0xb2, 0xb3,
	0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf,
	0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb,
	0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7,
	0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xe1, 0xe2, 0xe3,
	0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef,
	0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb,
	0xfc, 0xfd, 0xfe, 0xff,
};

/*
 * reg-name characters (unreserved / sub-delims): 0x100 | the lower-cased
 * character; 0 for every other byte.  Four lookups ANDed say whether all
 * four bytes are valid.
 */
static const u16 kt_http_host_cc[256] = {
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0x00 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0x08 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0x10 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0x18 */
	0x000, 0x121, 0x000, 0x000, 0x124, 0x000, 0x126, 0x127,	/* 0x20 */
	0x128, 0x129, 0x12a, 0x12b, 0x12c, 0x12d, 0x12e, 0x000,	/* 0x28 */
	0x130, 0x131, 0x132, 0x133, 0x134, 0x135, 0x136, 0x137,	/* 0x30 */
	0x138, 0x139, 0x000, 0x13b, 0x000, 0x13d, 0x000, 0x000,	/* 0x38 */
	0x000, 0x161, 0x162, 0x163, 0x164, 0x165, 0x166, 0x167,	/* 0x40 */
	0x168, 0x169, 0x16a, 0x16b, 0x16c, 0x16d, 0x16e, 0x16f,	/* 0x48 */
	0x170, 0x171, 0x172, 0x173, 0x174, 0x175, 0x176, 0x177,	/* 0x50 */
	0x178, 0x179, 0x17a, 0x000, 0x000, 0x000, 0x000, 0x15f,	/* 0x58 */
	0x000, 0x161, 0x162, 0x163, 0x164, 0x165, 0x166, 0x167,	/* 0x60 */
	0x168, 0x169, 0x16a, 0x16b, 0x16c, 0x16d, 0x16e, 0x16f,	/* 0x68 */
	0x170, 0x171, 0x172, 0x173, 0x174, 0x175, 0x176, 0x177,	/* 0x70 */
	0x178, 0x179, 0x17a, 0x000, 0x000, 0x000, 0x17e, 0x000,	/* 0x78 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0x80 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0x88 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0x90 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0x98 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xa0 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xa8 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xb0 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xb8 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xc0 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xc8 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xd0 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xd8 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xe0 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xe8 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xf0 */
	0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000, 0x000,	/* 0xf8 */
};

static inline bool kt_http_is(u8 c, u8 cls)
{
	return kt_http_cc[c] & cls;
}

static inline u8 kt_http_lc(u8 c)
{
	return kt_http_lower[c];
}

static inline u64 kt_http_load8(const u8 *p)
{
	u64 w;

	memcpy(&w, p, 8);
	return w;
}

static inline bool kt_http_digit(u8 c)
{
	return (u8)(c - '0') < 10;
}

static inline u32 kt_http_min(u32 a, u32 b)
{
	return a < b ? a : b;
}

static inline u8 kt_http_hexval(u8 c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

static inline bool kt_http_ws(u8 c)
{
	return c == ' ' || c == '\t';
}

/* Case-insensitive compare of s[0..n) with lower-case literal @lit. */
static bool kt_http_eq_ci(const u8 *s, u32 n, const char *lit, u32 lit_len)
{
	u32 i;

	if (n != lit_len)
		return false;
	for (i = 0; i < n; i++)
		if (kt_http_lc(s[i]) != (u8)lit[i])
			return false;
	return true;
}

/* Head parser states. */
enum {
	KT_S_START = 0,		/* before the start line: CRLFs allowed */
	KT_S_START_LF,
	KT_S_METHOD,
	KT_S_TARGET,
	KT_S_VERSION,
	KT_S_RL_LF,
	KT_S_RVERSION,
	KT_S_RCODE,
	KT_S_REASON,
	KT_S_SL_LF,
	KT_S_FIELD_START,
	KT_S_NAME,
	KT_S_VALUE,
	KT_S_FIELD_LF,
	KT_S_HEAD_LF,
	KT_S_DONE,
	KT_S_ERROR,
};

/* Private flags kept in m->tok2 while the request line is scanned. */
#define KT_P_PCT	0x1	/* '%' in the target */
#define KT_P_BRACKET	0x2	/* '[' or ']' in the target */
#define KT_P_QUERY	0x4	/* '?' seen: m->query_off is set */
#define KT_P_NORM	0x8	/* '%' before the query */

/* Private bits in m->flags (above the public ones). */
#define KT_HTTP_P_HOSTFIELD	0x10000	/* a Host field was seen */
#define KT_HTTP_P_ABSHOST	0x20000	/* host taken from the target */

static const char *const kt_http_methods[] = {
	[KT_HTTP_M_OTHER] = NULL,
	[KT_HTTP_M_GET] = "GET",
	[KT_HTTP_M_HEAD] = "HEAD",
	[KT_HTTP_M_POST] = "POST",
	[KT_HTTP_M_PUT] = "PUT",
	[KT_HTTP_M_DELETE] = "DELETE",
	[KT_HTTP_M_CONNECT] = "CONNECT",
	[KT_HTTP_M_OPTIONS] = "OPTIONS",
	[KT_HTTP_M_TRACE] = "TRACE",
	[KT_HTTP_M_PATCH] = "PATCH",
};

const char *kt_http_method_name(unsigned int method)
{
	if (method >= sizeof(kt_http_methods) / sizeof(kt_http_methods[0]))
		return NULL;
	return kt_http_methods[method];
}

static bool kt_http_lit(const u8 *s, const char *lit, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		if (s[i] != (u8)lit[i])
			return false;
	return true;
}

static inline u16 kt_http_load2(const u8 *p)
{
	u16 w;

	memcpy(&w, p, 2);
	return w;
}

static inline u32 kt_http_load4(const u8 *p)
{
	u32 w;

	memcpy(&w, p, 4);
	return w;
}

#define KT_W4(lit)	kt_http_load4((const u8 *)(lit))
#define KT_W8(lit)	kt_http_load8((const u8 *)(lit))

/*
 * Methods are case-sensitive (RFC 9110 9.1).  The method s[0..n) is always
 * followed by the SP of the request line, so s[0..n] may be read: words
 * are compared with the SP included.
 */
static u8 kt_http_method_id(const u8 *s, u32 n)
{
	u32 w = kt_http_load4(s);

	switch (n) {
	case 3:
		if (w == KT_W4("GET "))
			return KT_HTTP_M_GET;
		if (w == KT_W4("PUT "))
			return KT_HTTP_M_PUT;
		break;
	case 4:
		if (w == KT_W4("POST"))
			return KT_HTTP_M_POST;
		if (w == KT_W4("HEAD"))
			return KT_HTTP_M_HEAD;
		break;
	case 5:
		if (w == KT_W4("PATC") && s[4] == 'H')
			return KT_HTTP_M_PATCH;
		if (w == KT_W4("TRAC") && s[4] == 'E')
			return KT_HTTP_M_TRACE;
		break;
	case 6:
		if (w == KT_W4("DELE") && kt_http_load4(s + 3) == KT_W4("ETE "))
			return KT_HTTP_M_DELETE;
		break;
	case 7:
		if (kt_http_load8(s) == KT_W8("OPTIONS "))
			return KT_HTTP_M_OPTIONS;
		if (kt_http_load8(s) == KT_W8("CONNECT "))
			return KT_HTTP_M_CONNECT;
		break;
	}
	return KT_HTTP_M_OTHER;
}

void kt_http_limits_init(struct kt_http_limits *l)
{
	l->request_line = KT_HTTP_DEF_REQUEST_LINE;
	l->header_line = KT_HTTP_DEF_HEADER_LINE;
	l->fields = KT_HTTP_DEF_FIELDS;
	l->head = KT_HTTP_DEF_HEAD;
	l->flags = KT_HTTP_F_MERGE_SLASHES;
}

static void kt_http_init(struct kt_http_msg *m, const struct kt_http_limits *lim,
			 struct kt_http_field *fields, u32 cap)
{
	/*
	 * Everything up to the limits starts at zero (results, counters,
	 * refusal); the private scanning state after them is set here or
	 * before it is read, and only pos, nf_seen and state must be zero.
	 */
	memset(m, 0, offsetof(struct kt_http_msg, fields));
	m->nfields = 0;
	m->out = NULL;
	m->out_cap = 0;
	m->out_len = 0;
	m->reason = NULL;
	m->err_off = 0;
	m->pos = 0;
	m->nf_seen = 0;
	m->tok = 0;
	m->tok2 = 0;
	m->line_start = 0;
	m->val = 0;
	m->resp_code_len = 0;
	if (lim)
		m->lim = *lim;
	else
		kt_http_limits_init(&m->lim);
	m->fields = fields;
	m->fields_cap = fields ? cap : 0;
	if (fields && cap < m->lim.fields)
		m->lim.fields = cap;
	m->end_lim = m->lim.head;
	m->state = KT_S_START;
}

void kt_http_req_init(struct kt_http_msg *m, const struct kt_http_limits *lim,
		      struct kt_http_field *fields, u32 cap,
		      u8 *out, u32 out_cap)
{
	kt_http_init(m, lim, fields, cap);
	m->out = out;
	m->out_cap = out ? out_cap : 0;
}

void kt_http_resp_init(struct kt_http_msg *m, const struct kt_http_limits *lim,
		       struct kt_http_field *fields, u32 cap,
		       unsigned int req_method)
{
	kt_http_init(m, lim, fields, cap);
	m->flags = KT_HTTP_RESPONSE;
	m->req_method = (u16)req_method;
}

bool kt_http_idle(const struct kt_http_msg *m)
{
	return m->state == KT_S_START;
}

static int kt_http_fail(struct kt_http_msg *m, u16 status, const char *why,
			u32 off)
{
	m->status = (m->flags & KT_HTTP_RESPONSE) ? 502 : status;
	m->reason = why;
	m->err_off = off;
	m->state = KT_S_ERROR;
	return KT_HTTP_ERROR;
}

/* ---- hosts ---- */

/* dec-octet "." dec-octet "." dec-octet "." dec-octet, no leading zeros */
static bool kt_http_ipv4(const u8 *s, u32 n)
{
	u32 i = 0, parts = 0, v, d;

	for (;;) {
		v = 0;
		d = 0;
		while (i < n && kt_http_digit(s[i]) && d < 4) {
			v = v * 10 + (s[i] - '0');
			i++;
			d++;
		}
		if (d == 0 || d > 3 || v > 255 || (d > 1 && s[i - d] == '0'))
			return false;
		if (++parts == 4)
			return i == n;
		if (i >= n || s[i] != '.')
			return false;
		i++;
	}
}

/* IPv6address of RFC 3986 3.2.2 (no zone identifier, no IPvFuture). */
static bool kt_http_ipv6(const u8 *s, u32 n)
{
	u32 i = 0, st, groups = 0;
	bool dbl = false;

	if (n >= 2 && s[0] == ':' && s[1] == ':') {
		dbl = true;
		i = 2;
		if (i == n)
			return true;
	} else if (n == 0 || s[0] == ':') {
		return false;
	}
	while (i < n) {
		st = i;
		while (i < n && i - st < 5 && kt_http_is(s[i], KT_C_HEX))
			i++;
		if (i < n && s[i] == '.') {
			if (!kt_http_ipv4(s + st, n - st))
				return false;
			groups += 2;
			break;
		}
		if (i == st || i - st > 4)
			return false;
		groups++;
		if (i == n)
			break;
		if (s[i] != ':')
			return false;
		i++;
		if (i < n && s[i] == ':') {
			if (dbl)
				return false;
			dbl = true;
			i++;
		} else if (i == n) {
			return false;
		}
	}
	return dbl ? groups <= 7 : groups == 8;
}

/*
 * uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2): reg-name without
 * pct-encoding, IPv4 or an IPv6 literal; port up to 65535, may be empty
 * unless @need_port.  *@hl = length of the host part.
 */
static const char *kt_http_authority(const u8 *s, u32 n, u32 *hl,
				     bool need_port, u8 *dst)
{
	u32 i = 0, d, port = 0, lim;

	*hl = 0;
	if (n && s[0] == '[') {
		while (i < n && s[i] != ']')
			i++;
		if (i >= n || !kt_http_ipv6(s + 1, i - 1))
			return "invalid IPv6 literal";
		i++;
		if (dst && i <= KT_HTTP_HOST_MAX)
			for (d = 0; d < i; d++)
				dst[d] = kt_http_lc(s[d]);
	} else {
		/* validate and copy lower-cased (into dst, if any) in one pass */
		if (dst) {
			u32 a, b, c, e;

			lim = kt_http_min(n, KT_HTTP_HOST_MAX + 1);
			while (i + 4 <= lim) {
				a = kt_http_host_cc[s[i]];
				b = kt_http_host_cc[s[i + 1]];
				c = kt_http_host_cc[s[i + 2]];
				e = kt_http_host_cc[s[i + 3]];
				/* dst has room for lim bytes: stores are safe */
				dst[i] = (u8)a;
				dst[i + 1] = (u8)b;
				dst[i + 2] = (u8)c;
				dst[i + 3] = (u8)e;
				if (!(a & b & c & e))
					break;
				i += 4;
			}
			while (i < lim && (a = kt_http_host_cc[s[i]])) {
				dst[i] = (u8)a;
				i++;
			}
		}
		while (i < n && kt_http_is(s[i], KT_C_REGNAME))
			i++;
	}
	*hl = i;
	if (i > KT_HTTP_HOST_MAX)
		return "host too long";
	if (i == n)
		return need_port ? "missing port" : NULL;
	if (s[i] != ':')
		return "invalid character in host";
	d = ++i;
	while (i < n && kt_http_digit(s[i])) {
		if (i - d == 5)
			return "invalid port";
		port = port * 10 + (s[i] - '0');
		i++;
	}
	if (i < n || port > 65535)
		return "invalid port";
	if (need_port && i == d)
		return "missing port";
	return NULL;
}

/* Room for a lower-cased host at the end of out[], or NULL. */
static inline u8 *kt_http_host_dst(struct kt_http_msg *m)
{
	if (m->out_cap - m->out_len < KT_HTTP_HOST_MAX + 1)
		return NULL;
	return m->out + m->out_len;
}

/* The host was written by kt_http_authority() into kt_http_host_dst(). */
static inline void kt_http_host_set(struct kt_http_msg *m, u32 n)
{
	m->host_off = m->out_len;
	m->host_len = n;
	m->out_len += n;
	m->flags |= KT_HTTP_HAS_HOST;
}

static int kt_http_put_host(struct kt_http_msg *m, const u8 *s, u32 n)
{
	u32 i;

	if (n > m->out_cap - m->out_len)
		return -1;
	m->host_off = m->out_len;
	m->host_len = n;
	for (i = 0; i < n; i++)
		m->out[m->out_len + i] = kt_http_lc(s[i]);
	m->out_len += n;
	m->flags |= KT_HTTP_HAS_HOST;
	return 0;
}

/* ---- request target ---- */

static inline u8 kt_http_hexup(u8 c)
{
	return (c >= 'a' && c <= 'f') ? c - 32 : c;
}

/*
 * Normalize the path s[0..n) (s[0] == '/', stops at '?') into m->out:
 * RFC 3986 6.2.2: %XX of unreserved characters decoded, other %XX kept with
 * upper-case hex digits (so %2F stays), dot segments removed (after
 * decoding); runs of '/' merged when KT_HTTP_F_MERGE_SLASHES.  Refused: bad
 * %-escapes, %00, '[' or ']', and ".." above the root.  Returns the length
 * of the raw path consumed, or -1 after kt_http_fail().
 */
static long kt_http_norm_path(struct kt_http_msg *m, const u8 *s, u32 n,
			      u32 base)
{
	u32 i = 0, ol = 0, seg, sl;
	bool merge = m->lim.flags & KT_HTTP_F_MERGE_SLASHES;
	bool last;
	u8 *o;
	u8 c;

	if (n > m->out_cap - m->out_len) {
		kt_http_fail(m, 414, "request target too long", base);
		return -1;
	}
	o = m->out + m->out_len;
	while (i < n && s[i] != '?') {
		/* s[i] == '/' */
		i++;
		seg = ol;
		o[ol++] = '/';
		while (i < n) {
			c = s[i];
			if (c == '/' || c == '?')
				break;
			if (c == '%') {
				if (i + 2 >= n || !kt_http_is(s[i + 1], KT_C_HEX) ||
				    !kt_http_is(s[i + 2], KT_C_HEX)) {
					kt_http_fail(m, 400,
						     "invalid percent-encoding",
						     base + i);
					return -1;
				}
				c = kt_http_hexval(s[i + 1]) << 4 |
				    kt_http_hexval(s[i + 2]);
				if (c == 0) {
					kt_http_fail(m, 400, "%00 in path",
						     base + i);
					return -1;
				}
				if (kt_http_is(c, KT_C_UNRES)) {
					o[ol++] = c;
				} else {
					o[ol++] = '%';
					o[ol++] = kt_http_hexup(s[i + 1]);
					o[ol++] = kt_http_hexup(s[i + 2]);
				}
				i += 3;
				continue;
			}
			if (unlikely(c == '[' || c == ']')) {
				kt_http_fail(m, 400,
					     "invalid character in request target",
					     base + i);
				return -1;
			}
			o[ol++] = c;
			i++;
		}
		last = i >= n || s[i] == '?';
		sl = ol - seg - 1;
		if (sl == 1 && o[seg + 1] == '.') {
			ol = seg;
			if (last)
				o[ol++] = '/';
		} else if (sl == 2 && o[seg + 1] == '.' && o[seg + 2] == '.') {
			if (seg == 0) {
				kt_http_fail(m, 400, "path climbs above root",
					     base + i - 1);
				return -1;
			}
			ol = seg;
			while (o[--ol] != '/')
				;
			if (last)
				o[ol++] = '/';
		} else if (sl == 0 && merge && !last) {
			ol = seg;
		}
	}
	m->path_off = m->out_len;
	m->path_len = ol;
	m->out_len += ol;
	return i;
}

/* Query: every '%' starts a valid escape, no '[' or ']'. */
static int kt_http_check_query(struct kt_http_msg *m, const u8 *s, u32 n,
			       u32 base)
{
	u32 i;

	for (i = 0; i < n; i++) {
		if (s[i] == '%') {
			if (i + 2 >= n || !kt_http_is(s[i + 1], KT_C_HEX) ||
			    !kt_http_is(s[i + 2], KT_C_HEX))
				return kt_http_fail(m, 400,
						    "invalid percent-encoding",
						    base + i);
		} else if (s[i] == '[' || s[i] == ']') {
			return kt_http_fail(m, 400,
					    "invalid character in request target",
					    base + i);
		}
	}
	return 0;
}

#define KT_ONES		0x0101010101010101ULL
#define KT_HIGHS	0x8080808080808080ULL
#define KT_LOWS		0x7f7f7f7f7f7f7f7fULL

static inline void kt_http_store8(u8 *p, u64 w)
{
	memcpy(p, &w, 8);
}

/*
 * 0x80 in the bytes of @w that are 0 (Mycroft's test).  Borrows make it
 * flag a byte 0x01 just above (towards the most significant byte) a zero
 * byte, too; see kt_http_copy_plain() for why that is harmless there.
 */
static inline u64 kt_http_haszero(u64 x)
{
	return (x - KT_ONES) & ~x & KT_HIGHS;
}

/*
 * Copy the path s[0..n) (no '%', no brackets) to o[0..n) eight bytes at a
 * time and say whether it is already normal: no "//" and no "/.".  Reads
 * s[0..n+8) (the request line goes on for at least " HTTP/1.1\r\n" after
 * the target) and writes o[0..n+7).
 *
 * t flags a byte that is '/' followed by '/' or '.' ('.' | 1 == '/').  The
 * next-byte test is exact: a false positive of kt_http_haszero() needs
 * x == 0x01, and x = (b | 1) ^ '/' is always even.  The '/' test can also
 * flag a '.' (x == 0x01) right above a real '/': on little-endian machines
 * that is the '.' after a '/', a "/." flagged anyway, so the result is
 * exact; on big-endian machines it may send a "./" path to
 * kt_http_norm_path(), which gives the same result, only slower.
 */
static inline bool kt_http_copy_plain(u8 *o, const u8 *s, u32 n)
{
	u64 w, t;
	u32 i;

	for (i = 0; i < n; i += 8) {
		w = kt_http_load8(s + i);
		kt_http_store8(o + i, w);
		t = kt_http_haszero(w ^ (KT_ONES * '/')) &
		    kt_http_haszero((kt_http_load8(s + i + 1) | KT_ONES) ^
				    (KT_ONES * '/'));
		if (unlikely(t)) {
			if (n - i >= 8)
				return false;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
			t &= ~0ULL << (8 * (8 - (n - i)));
#else
			t &= ~0ULL >> (8 * (8 - (n - i)));
#endif
			if (t)
				return false;
		}
	}
	return true;
}

/* Path (from s[0] == '/') and optional query of origin/absolute-form. */
static __always_inline int kt_http_path_query(struct kt_http_msg *m, const u8 *buf, u32 off,
			      u32 n, u32 pflags)
{
	const u8 *s = buf + off;
	u32 room = m->out_cap - m->out_len;
	long pl;

	pl = (pflags & KT_P_QUERY) ? m->query_off - 1 - off : n;
	if (likely(!(pflags & (KT_P_NORM | KT_P_BRACKET)) && pl + 8 <= room) &&
	    kt_http_copy_plain(m->out + m->out_len, s, pl)) {
		/* no '%', "//" or "/." in the path: it is already normal */
		m->path_off = m->out_len;
		m->path_len = pl;
		m->out_len += pl;
	} else {
		pl = kt_http_norm_path(m, s, n, off);
		if (pl < 0)
			return KT_HTTP_ERROR;
	}
	if ((u32)pl < n) {
		/* s[pl] == '?' */
		m->flags |= KT_HTTP_HAS_QUERY;
		m->query_off = off + pl + 1;
		m->query_len = n - pl - 1;
		if (pflags & (KT_P_PCT | KT_P_BRACKET))
			return kt_http_check_query(m, buf + m->query_off,
						   m->query_len, m->query_off);
	}
	return 0;
}

static int kt_http_out_const(struct kt_http_msg *m, const char *s, u32 n)
{
	if (n > m->out_cap - m->out_len)
		return kt_http_fail(m, 414, "request target too long",
				    m->target_off);
	memcpy(m->out + m->out_len, s, n);
	m->path_off = m->out_len;
	m->path_len = n;
	m->out_len += n;
	return 0;
}

/* absolute-form: "http" / "https" "://" authority path-abempty [ "?" query ] */
static int kt_http_absolute(struct kt_http_msg *m, const u8 *buf, u32 pflags)
{
	const u8 *t = buf + m->target_off;
	u32 n = m->target_len, i, a, hl, sch;
	const char *why;

	if (n > 7 && kt_http_eq_ci(t, 7, "http://", 7))
		sch = 7;
	else if (n > 8 && kt_http_eq_ci(t, 8, "https://", 8))
		sch = 8;
	else
		return kt_http_fail(m, 400, "invalid request target",
				    m->target_off);
	a = sch;
	for (i = a; i < n && t[i] != '/' && t[i] != '?'; i++)
		if (t[i] == '@')
			return kt_http_fail(m, 400, "userinfo in request target",
					    m->target_off + i);
	why = kt_http_authority(t + a, i - a, &hl, false, NULL);
	if (why)
		return kt_http_fail(m, 400, why, m->target_off + a + hl);
	if (hl == 0)
		return kt_http_fail(m, 400, "empty host in request target",
				    m->target_off + a);
	if (i < n && t[i] == '/') {
		if (kt_http_path_query(m, buf, m->target_off + i, n - i, pflags))
			return KT_HTTP_ERROR;
	} else {
		if (kt_http_out_const(m, "/", 1))
			return KT_HTTP_ERROR;
		if (i < n) {
			m->flags |= KT_HTTP_HAS_QUERY;
			m->query_off = m->target_off + i + 1;
			m->query_len = n - i - 1;
			if ((pflags & (KT_P_PCT | KT_P_BRACKET)) &&
			    kt_http_check_query(m, buf + m->query_off,
						m->query_len, m->query_off))
				return KT_HTTP_ERROR;
		}
	}
	/* Checked for brackets only inside the authority (above). */
	if (kt_http_put_host(m, t + a, hl))
		return kt_http_fail(m, 400, "host too long", m->target_off);
	m->flags |= KT_HTTP_P_ABSHOST;
	m->form = KT_HTTP_T_ABSOLUTE;
	return 0;
}

/* The request line is complete: method, target form, path, version. */
static int kt_http_target_other(struct kt_http_msg *m, const u8 *buf,
				u32 pflags);

static int kt_http_request_line(struct kt_http_msg *m, const u8 *buf,
				u32 vo, u32 pflags)
{
	const u8 *t = buf + m->target_off;
	const u8 *v = buf + vo;
	u32 n = m->target_len;

	if (m->method != KT_HTTP_M_GET)	/* else known from the fast path */
		m->method = kt_http_method_id(buf + m->method_off,
					      m->method_len);

	/* m->version is already set when the version was "HTTP/1.[01]" */
	if (unlikely(!m->version)) {
		if (!kt_http_lit(v, "HTTP/", 5) || !kt_http_digit(v[5]) ||
		    v[6] != '.' || !kt_http_digit(v[7]))
			return kt_http_fail(m, 400, "malformed HTTP version",
					    vo);
		if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
			return kt_http_fail(m, 505,
					    "HTTP version not supported",
					    vo);
		m->version = v[7] == '1' ? 11 : 10;
	}

	if (t[0] == '/') {
		if (m->method == KT_HTTP_M_CONNECT)
			return kt_http_fail(m, 400,
					    "CONNECT needs authority-form",
					    m->target_off);
		m->form = KT_HTTP_T_ORIGIN;
		return kt_http_path_query(m, buf, m->target_off, n, pflags);
	}
	return kt_http_target_other(m, buf, pflags);
}

/* Targets other than origin-form (asterisk, authority, absolute). */
static __attribute__((__noinline__)) int
kt_http_target_other(struct kt_http_msg *m, const u8 *buf, u32 pflags)
{
	const u8 *t = buf + m->target_off;
	u32 n = m->target_len, hl;
	const char *why;

	if (n == 1 && t[0] == '*') {
		if (m->method != KT_HTTP_M_OPTIONS)
			return kt_http_fail(m, 400,
					    "asterisk-form only with OPTIONS",
					    m->target_off);
		m->form = KT_HTTP_T_ASTERISK;
		return kt_http_out_const(m, "*", 1);
	}
	if (m->method == KT_HTTP_M_CONNECT) {
		why = kt_http_authority(t, n, &hl, true, NULL);
		if (!why && hl == 0)
			why = "empty host in request target";
		if (why)
			return kt_http_fail(m, 400, why, m->target_off);
		m->form = KT_HTTP_T_AUTHORITY;
		m->path_off = m->out_len;
		m->path_len = 0;
		if (kt_http_put_host(m, t, hl))
			return kt_http_fail(m, 414, "request target too long",
					    m->target_off);
		m->flags |= KT_HTTP_P_ABSHOST;
		return 0;
	}
	return kt_http_absolute(m, buf, pflags);
}

/* ---- header fields ---- */

/* Content-Length = 1#DIGIT, all list members and fields equal. */
static int kt_http_content_length(struct kt_http_msg *m, const u8 *s, u32 n,
				  u32 off)
{
	u32 i = 0, st, d;
	u64 v;

	for (;;) {
		while (i < n && kt_http_ws(s[i]))
			i++;
		st = i;
		v = 0;
		while (i < n && kt_http_digit(s[i])) {
			d = s[i] - '0';
			if (v > KT_HTTP_LENGTH_MAX / 10 ||
			    (v == KT_HTTP_LENGTH_MAX / 10 &&
			     d > KT_HTTP_LENGTH_MAX % 10))
				return kt_http_fail(m, 400,
						    "Content-Length too large",
						    off + i);
			v = v * 10 + d;
			i++;
		}
		if (i == st)
			return kt_http_fail(m, 400, "malformed Content-Length",
					    off + i);
		if ((m->flags & KT_HTTP_HAS_CL) && v != m->content_length)
			return kt_http_fail(m, 400,
					    "conflicting Content-Length",
					    off + st);
		m->flags |= KT_HTTP_HAS_CL;
		m->content_length = v;
		while (i < n && kt_http_ws(s[i]))
			i++;
		if (i == n)
			return 0;
		if (s[i] != ',')
			return kt_http_fail(m, 400, "malformed Content-Length",
					    off + i);
		i++;
	}
}

/*
 * Transfer-Encoding: the only coding a switch needs to understand is
 * chunked; anything else is "not understood" (501, RFC 9112 6.1).
 */
static int kt_http_transfer_encoding(struct kt_http_msg *m, const u8 *s,
				     u32 n, u32 off)
{
	u32 i = 0, st, e;

	if (m->version == 10)
		return kt_http_fail(m, 400, "Transfer-Encoding in HTTP/1.0",
				    off);
	m->flags |= KT_HTTP_HAS_TE;
	for (;;) {
		while (i < n && kt_http_ws(s[i]))
			i++;
		st = i;
		while (i < n && s[i] != ',')
			i++;
		e = i;
		while (e > st && kt_http_ws(s[e - 1]))
			e--;
		if (e == st)
			return kt_http_fail(m, 400, "empty transfer coding",
					    off + st);
		if (!kt_http_eq_ci(s + st, e - st, "chunked", 7))
			return kt_http_fail(m, 501, "unknown transfer coding",
					    off + st);
		if (m->flags & KT_HTTP_TE_CHUNKED)
			return kt_http_fail(m, 400, "chunked applied twice",
					    off + st);
		m->flags |= KT_HTTP_TE_CHUNKED;
		if (i == n)
			return 0;
		i++;
	}
}

/* Connection: close / keep-alive / upgrade options (case-insensitive). */
static void kt_http_connection(struct kt_http_msg *m, const u8 *s, u32 n)
{
	u32 i = 0, st, e;

	while (i < n) {
		while (i < n && (kt_http_ws(s[i]) || s[i] == ','))
			i++;
		st = i;
		while (i < n && s[i] != ',')
			i++;
		e = i;
		while (e > st && kt_http_ws(s[e - 1]))
			e--;
		if (kt_http_eq_ci(s + st, e - st, "close", 5))
			m->flags |= KT_HTTP_CONN_CLOSE;
		else if (kt_http_eq_ci(s + st, e - st, "keep-alive", 10))
			m->flags |= KT_HTTP_CONN_KA;
		else if (kt_http_eq_ci(s + st, e - st, "upgrade", 7))
			m->flags |= KT_HTTP_CONN_UPGRADE;
	}
}

/* Host field, the general case (port, IPv6 literal, errors). */
static __attribute__((__noinline__)) int
kt_http_host_slow(struct kt_http_msg *m, const u8 *s, u32 n, u32 off)
{
	bool use = !(m->flags & KT_HTTP_P_ABSHOST);
	u8 *dst = use ? kt_http_host_dst(m) : NULL;
	const char *why;
	u32 hl;

	if (m->flags & KT_HTTP_P_HOSTFIELD)
		return kt_http_fail(m, 400, "duplicate Host", off);
	why = kt_http_authority(s, n, &hl, false, dst);
	if (why)
		return kt_http_fail(m, 400, why, off + hl);
	m->flags |= KT_HTTP_P_HOSTFIELD;
	if (dst)
		kt_http_host_set(m, hl);
	else if (use && kt_http_put_host(m, s, hl))
		return kt_http_fail(m, 431, "host too long", off);
	return 0;
}

/*
 * ASCII upper-case letters of @w to lower case (bytes below 0x80; per byte
 * without carries: b + 0x3f has its high bit set from 'A' on, b + 0x25
 * from 'Z' + 1 on).
 */
static inline u64 kt_http_lower8(u64 w)
{
	u64 up = (w + KT_ONES * 0x3f) & ~(w + KT_ONES * 0x25) & KT_HIGHS;

	return w | (up >> 2);
}

/*
 * Host field.  Fast path: the first Host, a reg-name or IPv4 address
 * without port, checked and lower-cased into out[] in one pass (eight
 * bytes at a time: the class lookups ANDed, then a SWAR lower-case).
 * Anything else goes to kt_http_host_slow(), which starts over.
 */
static __attribute__((__noinline__)) int
kt_http_host_field(struct kt_http_msg *m, const u8 *s, u32 n, u32 off)
{
	const u8 *q = s, *e = s + n;
	u8 *dst;
	u32 a;

	if (unlikely(m->flags & (KT_HTTP_P_HOSTFIELD | KT_HTTP_P_ABSHOST)) ||
	    unlikely(n > KT_HTTP_HOST_MAX))
		return kt_http_host_slow(m, s, n, off);
	dst = kt_http_host_dst(m);
	if (unlikely(!dst))
		return kt_http_host_slow(m, s, n, off);
	/* dst has room for KT_HTTP_HOST_MAX + 1 >= n bytes */
	while (e - q >= 8) {
		a = kt_http_host_cc[q[0]] & kt_http_host_cc[q[1]] &
		    kt_http_host_cc[q[2]] & kt_http_host_cc[q[3]] &
		    kt_http_host_cc[q[4]] & kt_http_host_cc[q[5]] &
		    kt_http_host_cc[q[6]] & kt_http_host_cc[q[7]];
		if (!a)
			return kt_http_host_slow(m, s, n, off);
		/* all eight are reg-name characters, so ASCII */
		kt_http_store8(dst, kt_http_lower8(kt_http_load8(q)));
		q += 8;
		dst += 8;
	}
	while (q < e) {
		a = kt_http_host_cc[*q++];
		if (!a)
			return kt_http_host_slow(m, s, n, off);
		*dst++ = (u8)a;
	}
	m->flags |= KT_HTTP_P_HOSTFIELD;
	kt_http_host_set(m, n);
	return 0;
}

/* Lower-case ASCII letters of a field name by OR 0x20 (see below). */
#define KT_LC4		0x20202020U
#define KT_LC8		0x2020202020202020ULL

/*
 * A complete field line: name buf[no..no+nl), value buf[vo..vo+vl).
 *
 * The names that matter are compared a word at a time, OR 0x20.  For a
 * token character c that is exact against these lower-case names: c | 0x20
 * equals a letter l only for l and its upper case, and equals '-' only for
 * '-' and CR, which is not a token character.  Words overlap inside the
 * name, never past it.
 */
static int kt_http_field_done(struct kt_http_msg *m, const u8 *buf, u32 no,
			      u32 nl, u32 vo, u32 vl)
{
	const u8 *name = buf + no;
	const u8 *val = buf + vo;

	if (m->fields) {
		struct kt_http_field *f = &m->fields[m->nfields++];

		f->name_off = no;
		f->name_len = nl;
		f->value_off = vo;
		f->value_len = vl;
	}
	m->nf_seen++;
	/* lengths of host, upgrade, connection, content-length, t-e */
	if (likely(nl > 17 || !((1U << nl) &
				((1U << 4) | (1U << 7) | (1U << 10) |
				 (1U << 14) | (1U << 17)))))
		return 0;
	switch (nl) {
	case 4:
		if ((kt_http_load4(name) | KT_LC4) == KT_W4("host") &&
		    !(m->flags & KT_HTTP_RESPONSE))
			return kt_http_host_field(m, val, vl, vo);
		break;
	case 7:
		if ((kt_http_load4(name) | KT_LC4) == KT_W4("upgr") &&
		    (kt_http_load4(name + 3) | KT_LC4) == KT_W4("rade"))
			m->flags |= KT_HTTP_HAS_UPGRADE;
		break;
	case 10:
		if ((kt_http_load8(name) | KT_LC8) == KT_W8("connecti") &&
		    (kt_http_load4(name + 6) | KT_LC4) == KT_W4("tion"))
			kt_http_connection(m, val, vl);
		break;
	case 14:
		if ((kt_http_load8(name) | KT_LC8) == KT_W8("content-") &&
		    (kt_http_load8(name + 6) | KT_LC8) == KT_W8("t-length"))
			return kt_http_content_length(m, val, vl, vo);
		break;
	case 17:
		if ((kt_http_load8(name) | KT_LC8) == KT_W8("transfer") &&
		    (kt_http_load8(name + 8) | KT_LC8) == KT_W8("-encodin") &&
		    (name[16] | 0x20) == 'g')
			return kt_http_transfer_encoding(m, val, vl, vo);
		break;
	}
	return 0;
}

static void kt_http_keep_alive(struct kt_http_msg *m)
{
	if (m->flags & KT_HTTP_CONN_CLOSE)
		return;
	if (m->version == 11 || (m->flags & KT_HTTP_CONN_KA))
		m->flags |= KT_HTTP_KEEP_ALIVE;
}

/* The empty line arrived at offset @off: message-level checks, framing. */
static int kt_http_head_done(struct kt_http_msg *m, u32 off)
{
	u32 f = m->flags;

	/* The usual request: HTTP/1.1 with Host, no body, no Connection. */
	if (likely((f & (KT_HTTP_HAS_TE | KT_HTTP_HAS_CL | KT_HTTP_RESPONSE |
			 KT_HTTP_CONN_CLOSE | KT_HTTP_HAS_UPGRADE |
			 KT_HTTP_P_HOSTFIELD)) == KT_HTTP_P_HOSTFIELD &&
		   m->version == 11)) {
		m->flags = f | KT_HTTP_KEEP_ALIVE;
		return 0;
	}
	if ((f & KT_HTTP_HAS_TE) && (f & KT_HTTP_HAS_CL))
		return kt_http_fail(m, 400,
				    "Content-Length with Transfer-Encoding",
				    off);
	kt_http_keep_alive(m);
	if (!(f & KT_HTTP_RESPONSE)) {
		/*
		 * RFC 9110 9.3.6: CONNECT has no content.  Parsers disagree on
		 * what bytes after such a head are (body or tunnel): a desync.
		 */
		if (m->method == KT_HTTP_M_CONNECT &&
		    (f & (KT_HTTP_HAS_CL | KT_HTTP_HAS_TE)))
			return kt_http_fail(m, 400,
					    "CONNECT with Content-Length or Transfer-Encoding",
					    off);
		if (m->version == 11 && !(f & KT_HTTP_P_HOSTFIELD))
			return kt_http_fail(m, 400, "missing Host", off);
		if ((f & KT_HTTP_HAS_UPGRADE) && (f & KT_HTTP_CONN_UPGRADE))
			m->flags |= KT_HTTP_UPGRADE;
		if (f & KT_HTTP_HAS_TE)
			m->framing = KT_HTTP_FR_CHUNKED;
		else if (f & KT_HTTP_HAS_CL)
			m->framing = KT_HTTP_FR_LENGTH;
		return 0;
	}
	/* Response framing, RFC 9112 6.3. */
	if (m->status == 101 ||
	    (m->req_method == KT_HTTP_M_CONNECT && m->status / 100 == 2)) {
		m->framing = KT_HTTP_FR_TUNNEL;
		m->flags &= ~KT_HTTP_KEEP_ALIVE;
		if (m->status == 101)
			m->flags |= KT_HTTP_UPGRADE;
	} else if (m->status < 200 || m->status == 204 || m->status == 304 ||
		   m->req_method == KT_HTTP_M_HEAD) {
		m->framing = KT_HTTP_FR_NONE;
	} else if (f & KT_HTTP_HAS_TE) {
		m->framing = KT_HTTP_FR_CHUNKED;
	} else if (f & KT_HTTP_HAS_CL) {
		m->framing = KT_HTTP_FR_LENGTH;
	} else {
		m->framing = KT_HTTP_FR_CLOSE;
		m->flags &= ~KT_HTTP_KEEP_ALIVE;
	}
	return 0;
}

/* ---- the head parser ---- */

/*
 * First offset in [p, end) that is not a field-value byte (VCHAR, obs-text,
 * SP, HTAB), or end.  Eight bytes at a time: a word with no byte < 0x20 and
 * no 0x7f is all valid; otherwise the first flagged byte is found with a
 * count of trailing (little-endian) or leading (big-endian) zeros.
 */
static inline u32 kt_http_scan_fval(const u8 *buf, u32 p, u32 end)
{
	const u8 *q = buf + p, *e = buf + end;
	u64 w, t;

	while (e - q >= 8) {
		w = kt_http_load8(q);
		/*
		 * Per byte, without carries between bytes: b & 0x7f, plus one,
		 * & 0x7f maps 0x00-0x1f to 0x01-0x20, 0x7f to 0 and 0x20-0x7e
		 * to 0x21-0x7f; adding 0x5f sets the high bit exactly for the
		 * latter.  obs-text has its own high bit.  So t flags exactly
		 * the CTLs and DEL.
		 */
		t = ((((w & KT_LOWS) + KT_ONES) & KT_LOWS) + KT_ONES * 0x5f) | w;
		t = ~t & KT_HIGHS;
		if (t) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
			q += __builtin_clzll(t) >> 3;
#else
			q += __builtin_ctzll(t) >> 3;
#endif
			if (*q != '\t')
				return q - buf;
			q++;
			continue;
		}
		q += 8;
	}
	while (q < e && kt_http_is(*q, KT_C_FVAL))
		q++;
	return q - buf;
}

/* Limit for a line starting at @p with at most @max bytes (head bounded). */
static inline u32 kt_http_line_end(const struct kt_http_msg *m, u32 p,
				   u32 max)
{
	u64 e = (u64)p + max + 2;

	return e > m->lim.head ? m->lim.head : (u32)e;
}

/* The line or the head ran over its limit at m->end_lim. */
static int kt_http_too_long(struct kt_http_msg *m)
{
	u32 off = m->end_lim;

	switch (m->state) {
	case KT_S_START:
	case KT_S_START_LF:
		break;
	case KT_S_METHOD:
	case KT_S_TARGET:
	case KT_S_VERSION:
	case KT_S_RL_LF:
		if (m->end_lim - m->line_start == m->lim.request_line + 2)
			return kt_http_fail(m, 414, "request line too long",
					    off);
		break;
	case KT_S_RVERSION:
	case KT_S_RCODE:
	case KT_S_REASON:
	case KT_S_SL_LF:
		if (m->end_lim - m->line_start == m->lim.request_line + 2)
			return kt_http_fail(m, 502, "status line too long",
					    off);
		break;
	default:
		if (m->end_lim - m->line_start == m->lim.header_line + 2)
			return kt_http_fail(m, 431, "header line too long",
					    off);
		break;
	}
	return kt_http_fail(m, 431, "head too large", off);
}

/* Limit of the line in state @st that started at @ls. */
static u32 kt_http_state_lim(const struct kt_http_msg *m, u8 st, u32 ls)
{
	if (st <= KT_S_START_LF)
		return m->lim.head;
	return kt_http_line_end(m, ls, st <= KT_S_SL_LF ? m->lim.request_line :
				m->lim.header_line);
}

/*
 * Out of bytes in state @st at @p: keep the scanning state (it lives in
 * locals of kt_http_parse() while bytes are there) and wait for more, unless
 * the scan stopped at the line or head limit rather than at the end of the
 * n bytes received.
 */
static int kt_http_more(struct kt_http_msg *m, u8 st, u32 p, u32 n, u32 ls,
			u32 tok, u32 tok2)
{
	u32 elim = kt_http_state_lim(m, st, ls);

	m->state = st;
	m->tok = tok;
	m->tok2 = tok2;
	m->line_start = ls;
	m->end_lim = elim;
	if (elim <= n)
		return kt_http_too_long(m);
	m->pos = p;
	return KT_HTTP_AGAIN;
}

#define KT_MORE(st)	return kt_http_more(m, (st), p, n, lstart, tok, tok2)

#define KT_FAIL(st, why, off)	return kt_http_fail(m, (st), (why), (off))

/*
 * A line starts at p: the scan ends at its limit or at n, whichever comes
 * first (n <= lim.head; kt_http_more() works out which one stopped it).
 */
#define KT_LINE(max)							\
	do {								\
		lstart = p;						\
		end = (u64)(n - p) > (u64)(max) + 2 ? p + (max) + 2 : n; \
	} while (0)

/*
 * First offset in [p, end) whose byte is not of class @cls, or end: four
 * bytes per bounds check, and the byte that stops the scan is not looked at
 * twice.
 */
static inline u32 kt_http_skip(const u8 *buf, u32 p, u32 end, u8 cls)
{
	const u8 *q = buf + p, *e = buf + end;

	while (e - q >= 4) {
		if (!kt_http_is(q[0], cls))
			return q - buf;
		if (!kt_http_is(q[1], cls))
			return q + 1 - buf;
		if (!kt_http_is(q[2], cls))
			return q + 2 - buf;
		if (!kt_http_is(q[3], cls))
			return q + 3 - buf;
		q += 4;
	}
	while (q < e && kt_http_is(*q, cls))
		q++;
	return q - buf;
}

int kt_http_parse(struct kt_http_msg *m, const u8 *buf, size_t len)
{
	u32 n = len > m->lim.head ? m->lim.head : (u32)len;
	u32 p = m->pos, end = kt_http_min(n, m->end_lim);
	u32 tok = m->tok, tok2 = m->tok2, lstart = m->line_start;
	u32 vo, ve;
	u8 c;

	switch (m->state) {
	case KT_S_START:	goto s_start;
	case KT_S_START_LF:	goto s_start_lf;
	case KT_S_METHOD:	goto s_method;
	case KT_S_TARGET:	goto s_target;
	case KT_S_VERSION:	goto s_version;
	case KT_S_RL_LF:	goto s_rl_lf;
	case KT_S_RVERSION:	goto s_rversion;
	case KT_S_RCODE:	goto s_rcode;
	case KT_S_REASON:	goto s_reason;
	case KT_S_SL_LF:	goto s_sl_lf;
	case KT_S_FIELD_START:	goto s_field_start;
	case KT_S_NAME:		goto s_name;
	case KT_S_VALUE:	goto s_value;
	case KT_S_FIELD_LF:	goto s_field_lf;
	case KT_S_HEAD_LF:	goto s_head_lf;
	case KT_S_DONE:		return KT_HTTP_DONE;
	default:		return KT_HTTP_ERROR;
	}

s_start:
	/* Empty lines before the start line are ignored (RFC 9112 2.2). */
	if (p >= end)
		KT_MORE(KT_S_START);
	c = buf[p];
	if (c == '\r') {
		p++;
		goto s_start_lf;
	}
	m->start_off = p;
	KT_LINE(m->lim.request_line);
	tok = p;
	if (m->flags & KT_HTTP_RESPONSE)
		goto s_rversion;
	if (likely(p + 4 <= end) && kt_http_load4(buf + p) == KT_W4("GET ")) {
		m->method = KT_HTTP_M_GET;
		m->method_off = p;
		m->method_len = 3;
		tok = p += 4;
		tok2 = 0;
		goto s_target;
	}
	if (unlikely(!kt_http_is(c, KT_C_TCHAR))) {
		if (c == '\n')
			KT_FAIL(400, "bare LF", p);
		KT_FAIL(400, "invalid method", p);
	}
	p++;
	goto s_method;

s_start_lf:
	if (p >= end)
		KT_MORE(KT_S_START_LF);
	if (buf[p] != '\n')
		KT_FAIL(400, "bare CR", p);
	p++;
	goto s_start;

s_method:
	p = kt_http_skip(buf, p, end, KT_C_TCHAR);
	if (p >= end)
		KT_MORE(KT_S_METHOD);
	if (buf[p] != ' ')
		KT_FAIL(400, "invalid method", p);
	m->method_off = tok;
	m->method_len = p - tok;
	tok = ++p;
	tok2 = 0;
	/* fall through */
s_target:
	/*
	 * Plain characters (with '/' and '.') in a tight loop; '?', '%' and
	 * brackets are noted on the way so that the query is only rescanned
	 * when it must be ("//" and "/." are looked for when the path is
	 * copied: kt_http_copy_plain()).
	 */
	for (;;) {
		p = kt_http_skip(buf, p, end, KT_C_PLAIN);
		if (p >= end)
			KT_MORE(KT_S_TARGET);
		c = buf[p];
		if (c == ' ')
			break;
		if (c == '?') {
			if (!(tok2 & KT_P_QUERY)) {
				tok2 |= KT_P_QUERY;
				m->query_off = p + 1;
			}
		} else if (c == '%') {
			tok2 |= (tok2 & KT_P_QUERY) ? KT_P_PCT :
				KT_P_PCT | KT_P_NORM;
		} else if (c == '[' || c == ']') {
			tok2 |= KT_P_BRACKET;
		} else if (c == '\r' || c == '\n')
			KT_FAIL(400, "missing HTTP version", p);
		else
			KT_FAIL(400, "invalid character in request target", p);
		p++;
	}
	if (p == tok)
		KT_FAIL(400, "empty request target", p);
	m->target_off = tok;
	m->target_len = p - tok;
	tok = ++p;
	/* fall through */
s_version:
	/* only from the first byte of the version: tok == p (not on resume) */
	if (likely(p == tok && p + 9 <= end) && buf[p + 8] == '\r') {
		u64 w = kt_http_load8(buf + p);

		if (likely(w == KT_W8("HTTP/1.1"))) {
			m->version = 11;
			p += 9;
			goto s_rl_lf;
		}
		if (w == KT_W8("HTTP/1.0")) {
			m->version = 10;
			p += 9;
			goto s_rl_lf;
		}
	}
	while (p < end && buf[p] > ' ' && buf[p] < 0x7f)
		p++;
	if (p >= end)
		KT_MORE(KT_S_VERSION);
	c = buf[p];
	if (c != '\r') {
		if (c == '\n')
			KT_FAIL(400, "bare LF", p);
		KT_FAIL(400, "malformed HTTP version", p);
	}
	if (p - tok != 8)
		KT_FAIL(400, "malformed HTTP version", tok);
	p++;
	/* fall through */
s_rl_lf:
	if (p >= end)
		KT_MORE(KT_S_RL_LF);
	if (buf[p] != '\n')
		KT_FAIL(400, "bare CR", p);
	p++;
	if (kt_http_request_line(m, buf, tok, tok2))
		return KT_HTTP_ERROR;
	goto fields;

s_rversion:
	while (p < end && buf[p] > ' ' && buf[p] < 0x7f)
		p++;
	if (p >= end)
		KT_MORE(KT_S_RVERSION);
	if (buf[p] != ' ' || p - tok != 8)
		KT_FAIL(502, "malformed HTTP version", p);
	{
		const u8 *v = buf + tok;

		if (!kt_http_lit(v, "HTTP/", 5) ||
		    !kt_http_digit(v[5]) || v[6] != '.' ||
		    !kt_http_digit(v[7]))
			KT_FAIL(502, "malformed HTTP version", tok);
		if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
			KT_FAIL(502, "HTTP version not supported", tok);
		m->version = v[7] == '1' ? 11 : 10;
	}
	tok = ++p;
	/* fall through */
s_rcode:
	while (p < end && kt_http_digit(buf[p]))
		p++;
	if (p >= end)
		KT_MORE(KT_S_RCODE);
	c = buf[p];
	if (p - tok != 3 || (c != ' ' && c != '\r') ||
	    buf[tok] < '1' || buf[tok] > '5')
		KT_FAIL(502, "malformed status code", p);
	m->status = (buf[tok] - '0') * 100 + (buf[tok + 1] - '0') * 10 +
		    (buf[tok + 2] - '0');
	tok = p + (c == ' ');
	p = tok;
	/* fall through */
s_reason:
	p = kt_http_scan_fval(buf, p, end);
	if (p >= end)
		KT_MORE(KT_S_REASON);
	if (buf[p] != '\r')
		KT_FAIL(502, buf[p] == '\n' ? "bare LF" :
			"invalid character in reason phrase", p);
	m->reason_off = tok;
	m->reason_len = p - tok;
	p++;
	/* fall through */
s_sl_lf:
	if (p >= end)
		KT_MORE(KT_S_SL_LF);
	if (buf[p] != '\n')
		KT_FAIL(502, "bare CR", p);
	p++;
	/* fall through */
fields:
	KT_LINE(m->lim.header_line);
	/* fall through */
s_field_start:
	if (p >= end)
		KT_MORE(KT_S_FIELD_START);
	if (unlikely(buf[p] == '\r')) {
		p++;
		goto s_head_lf;
	}
	if (unlikely(m->nf_seen >= m->lim.fields)) {
		if (kt_http_is(buf[p], KT_C_TCHAR))
			KT_FAIL(431, "too many header fields", p);
		goto bad_field_start;
	}
	tok = p;
	/* fall through */
s_name:
	p = kt_http_skip(buf, p, end, KT_C_TCHAR);
	if (p >= end)
		KT_MORE(KT_S_NAME);
	if (unlikely(buf[p] != ':' || p == tok)) {
		if (p == tok)
			goto bad_field_start;
		if (kt_http_ws(buf[p]))
			KT_FAIL(400, "whitespace before colon", p);
		KT_FAIL(400, "invalid character in field name", p);
	}
	tok2 = p++;
	/* fall through */
s_value:
	/*
	 * The value with its OWS: SP and HTAB are value bytes, so one scan
	 * to the CR validates it all; the OWS is trimmed below.
	 */
	p = kt_http_scan_fval(buf, p, end);
	if (likely(p + 2 <= end) &&
	    kt_http_load2(buf + p) == kt_http_load2((const u8 *)"\r\n")) {
		p++;
		goto field_lf;
	}
	if (p >= end)
		KT_MORE(KT_S_VALUE);
	if (unlikely(buf[p] != '\r')) {
		if (buf[p] == '\n')
			KT_FAIL(400, "bare LF", p);
		KT_FAIL(400, "invalid character in field value", p);
	}
	p++;
	/* fall through */
s_field_lf:
	if (p >= end)
		KT_MORE(KT_S_FIELD_LF);
	if (unlikely(buf[p] != '\n'))
		KT_FAIL(400, "bare CR", p);
field_lf:
	/*
	 * value: after the colon at tok2 up to the CR at p - 1, OWS trimmed
	 * on both sides.  Inside the line only SP and HTAB are <= ' ' (the
	 * CR ends it), so one compare rules out more OWS.
	 */
	vo = tok2 + 1;
	ve = p - 1;
	vo += buf[vo] == ' ';
	if (unlikely(buf[vo] <= ' '))
		while (vo < ve && kt_http_ws(buf[vo]))
			vo++;
	if (unlikely(buf[ve - 1] <= ' '))
		while (ve > vo && kt_http_ws(buf[ve - 1]))
			ve--;
	p++;
	if (kt_http_field_done(m, buf, tok, tok2 - tok, vo, ve - vo))
		return KT_HTTP_ERROR;
	goto fields;

bad_field_start:
	/* buf[p] (p < end) cannot start a field line */
	c = buf[p];
	if (kt_http_ws(c))
		KT_FAIL(400, m->nf_seen ? "obs-fold" :
			"whitespace before first header field", p);
	if (c == '\n')
		KT_FAIL(400, "bare LF", p);
	if (c == ':')
		KT_FAIL(400, "empty field name", p);
	KT_FAIL(400, "invalid character in field name", p);

s_head_lf:
	if (p >= end)
		KT_MORE(KT_S_HEAD_LF);
	if (buf[p] != '\n')
		KT_FAIL(400, "bare CR", p);
	p++;
	m->head_len = p;
	m->pos = p;
	if (kt_http_head_done(m, p - 2))
		return KT_HTTP_ERROR;
	m->state = KT_S_DONE;
	return KT_HTTP_DONE;
}

/* ---- body framing ---- */

enum {
	KT_B_DONE = 0,
	KT_B_LENGTH,		/* Content-Length countdown */
	KT_B_CLOSE,		/* until the peer closes */
	KT_B_SIZE,		/* first hex digit of a chunk size */
	KT_B_SIZE_MORE,		/* more hex digits */
	KT_B_SIZE_WS,		/* BWS after the size: ';' must follow */
	KT_B_EXT_PRE_NAME,	/* BWS after ';' */
	KT_B_EXT_NAME,
	KT_B_EXT_POST_NAME,	/* BWS after a name: '=' or ';' */
	KT_B_EXT_PRE_VAL,	/* BWS after '=' */
	KT_B_EXT_TOKEN,
	KT_B_EXT_QS,		/* inside a quoted string */
	KT_B_EXT_QS_ESC,	/* after '\' */
	KT_B_EXT_QEND,		/* after the closing quote */
	KT_B_EXT_POST_VAL,	/* BWS after a value: ';' must follow */
	KT_B_SIZE_LF,
	KT_B_DATA,
	KT_B_DATA_CR,
	KT_B_DATA_LF,
	KT_B_TR_START,		/* start of a trailer line */
	KT_B_TR_NAME,
	KT_B_TR_VALUE,
	KT_B_TR_LF,
	KT_B_TR_END_LF,		/* final CRLF of the trailer section */
	KT_B_ERROR,
};

void kt_http_body_init(struct kt_http_body *b, const struct kt_http_msg *m)
{
	memset(b, 0, sizeof(*b));
	b->framing = m->framing;
	b->response = !!(m->flags & KT_HTTP_RESPONSE);
	b->max_line = m->lim.header_line;
	b->max_fields = m->lim.fields;
	b->max_section = m->lim.head;
	switch (m->framing) {
	case KT_HTTP_FR_LENGTH:
		b->remaining = m->content_length;
		b->state = m->content_length ? KT_B_LENGTH : KT_B_DONE;
		break;
	case KT_HTTP_FR_CHUNKED:
		b->state = KT_B_SIZE;
		break;
	case KT_HTTP_FR_CLOSE:
		b->state = KT_B_CLOSE;
		break;
	default:
		b->state = KT_B_DONE;
		break;
	}
}

static int kt_http_body_fail(struct kt_http_body *b, u16 status,
			     const char *why, u8 c, size_t i, size_t *used)
{
	if (c == '\n' && status == 400)
		why = "bare LF";
	b->status = b->response ? 502 : status;
	b->reason = why;
	b->state = KT_B_ERROR;
	*used = i;
	return KT_HTTP_ERROR;
}

#define KT_BFAIL(why)	return kt_http_body_fail(b, 400, (why), c, i, used)

int kt_http_body_feed(struct kt_http_body *b, const u8 *d, size_t len,
		      size_t *used)
{
	size_t i = 0;
	u64 take;
	u8 c;

	switch (b->state) {
	case KT_B_DONE:
		*used = 0;
		return KT_HTTP_DONE;
	case KT_B_ERROR:
		*used = 0;
		return KT_HTTP_ERROR;
	case KT_B_CLOSE:
		b->decoded += len;
		b->wire += len;
		*used = len;
		return KT_HTTP_AGAIN;
	case KT_B_LENGTH:
		take = b->remaining < len ? b->remaining : len;
		b->remaining -= take;
		b->decoded += take;
		b->wire += take;
		*used = (size_t)take;
		if (b->remaining)
			return KT_HTTP_AGAIN;
		b->state = KT_B_DONE;
		return KT_HTTP_DONE;
	}

	while (i < len) {
		if (b->state == KT_B_DATA) {
			take = b->remaining < len - i ? b->remaining : len - i;
			i += (size_t)take;
			b->remaining -= take;
			b->decoded += take;
			if (!b->remaining)
				b->state = KT_B_DATA_CR;
			continue;
		}
		c = d[i];
		if (b->state >= KT_B_TR_START) {
			if (++b->section_len > b->max_section)
				return kt_http_body_fail(b, 431,
					"trailer section too large", c, i,
					used);
			if (++b->line_len > b->max_line + 2)
				return kt_http_body_fail(b, 431,
					"trailer line too long", c, i, used);
		} else if (b->state != KT_B_DATA_CR &&
			   b->state != KT_B_DATA_LF) {
			if (++b->line_len > b->max_line + 2)
				KT_BFAIL("chunk line too long");
		}
		switch (b->state) {
		case KT_B_SIZE:
			if (!kt_http_is(c, KT_C_HEX))
				KT_BFAIL("invalid chunk size");
			b->remaining = kt_http_hexval(c);
			b->state = KT_B_SIZE_MORE;
			break;
		case KT_B_SIZE_MORE:
			if (kt_http_is(c, KT_C_HEX)) {
				if (b->remaining > (KT_HTTP_LENGTH_MAX >> 4))
					KT_BFAIL("chunk size too large");
				b->remaining = b->remaining << 4 |
					       kt_http_hexval(c);
			} else if (c == ';') {
				b->state = KT_B_EXT_PRE_NAME;
			} else if (kt_http_ws(c)) {
				b->state = KT_B_SIZE_WS;
			} else if (c == '\r') {
				b->state = KT_B_SIZE_LF;
			} else {
				KT_BFAIL("invalid chunk size");
			}
			break;
		case KT_B_SIZE_WS:
		case KT_B_EXT_POST_VAL:
			if (c == ';')
				b->state = KT_B_EXT_PRE_NAME;
			else if (!kt_http_ws(c))
				KT_BFAIL("invalid chunk extension");
			break;
		case KT_B_EXT_PRE_NAME:
			if (kt_http_is(c, KT_C_TCHAR))
				b->state = KT_B_EXT_NAME;
			else if (!kt_http_ws(c))
				KT_BFAIL("invalid chunk extension");
			break;
		case KT_B_EXT_NAME:
		case KT_B_EXT_TOKEN:
			if (kt_http_is(c, KT_C_TCHAR))
				break;
			if (c == ';')
				b->state = KT_B_EXT_PRE_NAME;
			else if (c == '\r')
				b->state = KT_B_SIZE_LF;
			else if (c == '=' && b->state == KT_B_EXT_NAME)
				b->state = KT_B_EXT_PRE_VAL;
			else if (kt_http_ws(c))
				b->state = b->state == KT_B_EXT_NAME ?
					   KT_B_EXT_POST_NAME :
					   KT_B_EXT_POST_VAL;
			else
				KT_BFAIL("invalid chunk extension");
			break;
		case KT_B_EXT_POST_NAME:
			if (c == '=')
				b->state = KT_B_EXT_PRE_VAL;
			else if (c == ';')
				b->state = KT_B_EXT_PRE_NAME;
			else if (!kt_http_ws(c))
				KT_BFAIL("invalid chunk extension");
			break;
		case KT_B_EXT_PRE_VAL:
			if (kt_http_is(c, KT_C_TCHAR))
				b->state = KT_B_EXT_TOKEN;
			else if (c == '"')
				b->state = KT_B_EXT_QS;
			else if (!kt_http_ws(c))
				KT_BFAIL("invalid chunk extension");
			break;
		case KT_B_EXT_QS:
			if (c == '"')
				b->state = KT_B_EXT_QEND;
			else if (c == '\\')
				b->state = KT_B_EXT_QS_ESC;
			else if (!kt_http_is(c, KT_C_QDTEXT))
				KT_BFAIL("invalid chunk extension");
			break;
		case KT_B_EXT_QS_ESC:
			if (!kt_http_is(c, KT_C_FVAL))
				KT_BFAIL("invalid chunk extension");
			b->state = KT_B_EXT_QS;
			break;
		case KT_B_EXT_QEND:
			if (c == ';')
				b->state = KT_B_EXT_PRE_NAME;
			else if (c == '\r')
				b->state = KT_B_SIZE_LF;
			else if (kt_http_ws(c))
				b->state = KT_B_EXT_POST_VAL;
			else
				KT_BFAIL("invalid chunk extension");
			break;
		case KT_B_SIZE_LF:
			if (c != '\n')
				KT_BFAIL("bare CR");
			b->line_len = 0;
			b->state = b->remaining ? KT_B_DATA : KT_B_TR_START;
			break;
		case KT_B_DATA_CR:
			if (c != '\r')
				return kt_http_body_fail(b, 400,
					"missing CRLF after chunk data", 0, i,
					used);
			b->state = KT_B_DATA_LF;
			break;
		case KT_B_DATA_LF:
			if (c != '\n')
				return kt_http_body_fail(b, 400,
					"missing CRLF after chunk data", 0, i,
					used);
			b->line_len = 0;
			b->state = KT_B_SIZE;
			break;
		case KT_B_TR_START:
			if (c == '\r') {
				b->state = KT_B_TR_END_LF;
			} else if (kt_http_is(c, KT_C_TCHAR)) {
				if (++b->ntrailers > b->max_fields)
					return kt_http_body_fail(b, 431,
						"too many trailer fields", c,
						i, used);
				b->state = KT_B_TR_NAME;
			} else if (kt_http_ws(c)) {
				KT_BFAIL("obs-fold");
			} else {
				KT_BFAIL("invalid character in field name");
			}
			break;
		case KT_B_TR_NAME:
			if (c == ':')
				b->state = KT_B_TR_VALUE;
			else if (kt_http_ws(c))
				KT_BFAIL("whitespace before colon");
			else if (!kt_http_is(c, KT_C_TCHAR))
				KT_BFAIL("invalid character in field name");
			break;
		case KT_B_TR_VALUE:
			if (c == '\r')
				b->state = KT_B_TR_LF;
			else if (!kt_http_is(c, KT_C_FVAL))
				KT_BFAIL("invalid character in field value");
			break;
		case KT_B_TR_LF:
			if (c != '\n')
				KT_BFAIL("bare CR");
			b->line_len = 0;
			b->state = KT_B_TR_START;
			break;
		case KT_B_TR_END_LF:
			if (c != '\n')
				KT_BFAIL("bare CR");
			b->state = KT_B_DONE;
			i++;
			b->wire += i;
			*used = i;
			return KT_HTTP_DONE;
		}
		i++;
	}
	b->wire += len;
	*used = len;
	return KT_HTTP_AGAIN;
}

u64 kt_http_body_opaque(const struct kt_http_body *b)
{
	switch (b->state) {
	case KT_B_LENGTH:
	case KT_B_DATA:
		return b->remaining;
	case KT_B_CLOSE:
		return KT_HTTP_OPAQUE_ALL;
	default:
		return 0;
	}
}

int kt_http_body_skip(struct kt_http_body *b, u64 n)
{
	if (!n || n > kt_http_body_opaque(b)) {
		b->status = 500;
		b->reason = "body bytes beyond the framing";
		b->state = KT_B_ERROR;
		return KT_HTTP_ERROR;
	}
	b->decoded += n;
	b->wire += n;
	if (b->state == KT_B_CLOSE)
		return KT_HTTP_AGAIN;
	b->remaining -= n;
	if (b->remaining)
		return KT_HTTP_AGAIN;
	if (b->state == KT_B_DATA) {
		b->state = KT_B_DATA_CR;
		return KT_HTTP_AGAIN;
	}
	b->state = KT_B_DONE;
	return KT_HTTP_DONE;
}

int kt_http_body_eof(struct kt_http_body *b)
{
	if (b->state == KT_B_CLOSE)
		b->state = KT_B_DONE;
	if (b->state == KT_B_DONE)
		return KT_HTTP_DONE;
	if (b->state != KT_B_ERROR) {
		b->status = b->response ? 502 : 400;
		b->reason = "incomplete body";
		b->state = KT_B_ERROR;
	}
	return KT_HTTP_ERROR;
}

/* ---- lookups ---- */

int kt_http_find_field(const struct kt_http_msg *m, const u8 *buf,
		       const char *name, u32 name_len, u32 from)
{
	u32 i, j;

	for (i = from; i < m->nfields; i++) {
		const struct kt_http_field *f = &m->fields[i];
		const u8 *s = buf + f->name_off;

		if (f->name_len != name_len)
			continue;
		for (j = 0; j < name_len; j++)
			if (kt_http_lc(s[j]) != kt_http_lc((u8)name[j]))
				break;
		if (j == name_len)
			return (int)i;
	}
	return -1;
}

/*
 * cookie-string = cookie-pair *( ";" SP cookie-pair ) (RFC 6265 4.2.1),
 * read leniently: pairs split on ';', OWS around them ignored.  Cookie
 * names are case-sensitive.
 */
bool kt_http_cookie(const struct kt_http_msg *m, const u8 *buf,
		    const char *name, u32 name_len, u32 *off, u32 *len)
{
	int fi = -1;

	while ((fi = kt_http_find_field(m, buf, "cookie", 6, fi + 1)) >= 0) {
		const struct kt_http_field *f = &m->fields[fi];
		const u8 *s = buf + f->value_off;
		u32 n = f->value_len, i = 0, st, eq, e;

		while (i < n) {
			while (i < n && (kt_http_ws(s[i]) || s[i] == ';'))
				i++;
			st = i;
			eq = n;
			while (i < n && s[i] != ';') {
				if (s[i] == '=' && eq == n)
					eq = i;
				i++;
			}
			e = i;
			while (e > st && kt_http_ws(s[e - 1]))
				e--;
			if (eq < e && eq - st == name_len &&
			    kt_http_lit(s + st, name, name_len)) {
				*off = f->value_off + eq + 1;
				*len = e - eq - 1;
				return true;
			}
		}
	}
	return false;
}

/*
 * challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ], in a list
 * (RFC 9110 11.6.1): an element of the list is a scheme unless "=" follows
 * its token (then it is an auth-param of the challenge before), and commas
 * inside quoted strings separate nothing.  A scheme whose name starts
 * "NTLM" or "Nego" (Negotiate and its kin, as HAProxy matches them)
 * authenticates the connection.
 */
bool kt_http_auth_per_connection(const u8 *v, u32 n)
{
	bool quoted;
	u32 i = 0, tok, j;

	while (i < n) {
		if (kt_http_ws(v[i]) || v[i] == ',') {	/* OWS, empty elements */
			i++;
			continue;
		}
		tok = i;
		while (i < n && kt_http_is(v[i], KT_C_TCHAR))
			i++;
		for (j = i; j < n && kt_http_ws(v[j]); j++)
			;
		if (i - tok >= 4 && (j == n || v[j] != '=') &&
		    (kt_http_eq_ci(v + tok, 4, "ntlm", 4) ||
		     kt_http_eq_ci(v + tok, 4, "nego", 4)))
			return true;
		/* the rest of the element: up to a comma outside quotes */
		for (quoted = false; i < n; i++) {
			if (quoted && v[i] == '\\')
				i++;
			else if (v[i] == '"')
				quoted = !quoted;
			else if (!quoted && v[i] == ',')
				break;
		}
	}
	return false;
}

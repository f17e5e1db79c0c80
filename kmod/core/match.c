// SPDX-License-Identifier: GPL-2.0
/*
 * match.c - validate compiled rule tables and match requests against them.
 *
 * The blob layout is described in docs/rules-format.md and produced by
 * l7ctl/tables.py; the constants below must agree with both.  Validation
 * establishes every invariant the matcher relies on, so the matching code
 * below it does no bounds checks of its own.  See match.h for the API and
 * the cost model.
 */
#include "match.h"

/* ---- layout ---------------------------------------------------------------- */

#define KT_R_HDR_WORDS	8
#define KT_R_NSECT	10
/* header words */
#define KT_R_H_MAGIC	0
#define KT_R_H_VERSION	1
#define KT_R_H_LEN	2
#define KT_R_H_FLAGS	3
#define KT_R_H_NSECT	4
#define KT_R_H_MAX_CONNS 5
#define KT_R_H_RSVD	6	/* 2 words, 0 */
#define KT_R_DIR_WORDS	(2 * KT_R_NSECT)

enum {
	KT_R_S_STR, KT_R_S_POOL, KT_R_S_SERVER, KT_R_S_SERVICE, KT_R_S_RULE,
	KT_R_S_PRED, KT_R_S_FIELD, KT_R_S_HASH, KT_R_S_DFA, KT_R_S_WORDS,
};

static const u8 kt_rules_recw[KT_R_NSECT] = { 0, 24, 10, 40, 8, 1, 8, 5, 6, 1 };

/* pool record */
#define KT_P_NAME_OFF	0
#define KT_P_NAME_LEN	1
#define KT_P_SCHED	2
#define KT_P_FIRST	3
#define KT_P_COUNT	4
#define KT_P_FLAGS	5
#define KT_P_CHECK	6	/* words 6..16: the health check */
#define KT_P_INTERVAL	7
#define KT_P_TIMEOUT	8
#define KT_P_RISE	9
#define KT_P_FALL	10
#define KT_P_REQ_OFF	11
#define KT_P_REQ_LEN	12
#define KT_P_HOST_OFF	13
#define KT_P_HOST_LEN	14
#define KT_P_EXPECT_LO	15
#define KT_P_EXPECT_HI	16
#define KT_P_NCHECK	11
#define KT_P_PERSIST	17	/* words 17..20: persistence */
#define KT_P_COOKIE_OFF	18
#define KT_P_COOKIE_LEN	19
#define KT_P_SRC_TIMEOUT 20
#define KT_P_NPERSIST	4
#define KT_P_RSVD	21	/* 3 words, 0 */
#define KT_P_NRSVD	3
/* server record */
#define KT_SV_FAMILY	0
#define KT_SV_ADDR	1	/* 4 words */
#define KT_SV_PORT	5
#define KT_SV_WEIGHT	6
#define KT_SV_STATE	7
#define KT_SV_ID_LO	8	/* the persistence id, a u64, low word first */
#define KT_SV_ID_HI	9
/* service record */
#define KT_S_NAME_OFF	0
#define KT_S_NAME_LEN	1
#define KT_S_FAMILY	2
#define KT_S_ADDR	3	/* 4 words */
#define KT_S_PORT	7
#define KT_S_FLAGS	8
#define KT_S_LIMITS	9	/* 4 words */
#define KT_S_TIMEOUTS	13	/* 4 words */
#define KT_S_RULE_FIRST	17
#define KT_S_NRULES	18
#define KT_S_PRED_FIRST	19
#define KT_S_NPREDS	20
#define KT_S_FIELD_FIRST 21
#define KT_S_NFIELDS	22
#define KT_S_ALWAYS	23
#define KT_S_F_METHOD	24
#define KT_S_F_HOST	25
#define KT_S_F_PATH	26
#define KT_S_F_SRC4	27
#define KT_S_F_SRC6	28
#define KT_S_H_HEADER	29
#define KT_S_H_COOKIE	30
#define KT_S_H_QUERY	31
#define KT_S_LIMITS2	32	/* 3 words: limits 4..6 */
#define KT_S_LOG_MODE	35
#define KT_S_LOG_SAMPLE	36
#define KT_S_RSVD	37	/* 3 words, 0 */
#define KT_S_NRSVD	3
/* rule record */
#define KT_RU_ACTION	0
#define KT_RU_POOL	1
#define KT_RU_STATUS	2
#define KT_RU_LOC_OFF	3
#define KT_RU_LOC_LEN	4
#define KT_RU_CODE_OFF	5
#define KT_RU_CODE_LEN	6
#define KT_RU_LINE	7
/* field record */
#define KT_F_KIND	0
#define KT_F_EXISTS	1
#define KT_F_HASH	2
#define KT_F_LIT	3
#define KT_F_RE		4
#define KT_F_NAME_OFF	5
#define KT_F_NAME_LEN	6
#define KT_F_PAD	7
/* hash record */
#define KT_H_NBUCKETS	0
#define KT_H_FOLD	1
#define KT_H_BUCKETS	2
#define KT_H_ENTRIES	3
#define KT_H_NENTRIES	4
/* dfa record */
#define KT_D_NSTATES	0
#define KT_D_NCLASSES	1
#define KT_D_START	2
#define KT_D_CLASSMAP	3
#define KT_D_ROWS	4
#define KT_D_FLAGS	5

/* field kinds */
#define KT_FK_METHOD	1
#define KT_FK_HOST	2
#define KT_FK_PATH	3
#define KT_FK_HEADER	4
#define KT_FK_COOKIE	5
#define KT_FK_QUERY	6
#define KT_FK_SRC4	7
#define KT_FK_SRC6	8

/* formula opcodes: insn = op << 28 | arg */
#define KT_OP_PRED	0
#define KT_OP_TRUE	1
#define KT_OP_NOT	2
#define KT_OP_AND	3
#define KT_OP_OR	4
#define KT_OP_STACK	64	/* evaluation stack depth (bits of a u64) */

#define KT_HASH_MAX_BUCKETS	(1U << 24)

/* Service limit k (KT_LIMIT_*): words 9..12, then 32..34 (format 2.0). */
static inline u32 kt_rules_limit_word(u32 k)
{
	return k < 4 ? KT_S_LIMITS + k : KT_S_LIMITS2 + (k - 4);
}

/* The largest value of each service limit; 0 is always "the default". */
static const u32 kt_rules_limit_max[KT_LIMIT_COUNT] = {
	[KT_LIMIT_REQUEST_LINE]		= KT_RULES_MAX_REQUEST_LINE,
	[KT_LIMIT_HEADER_SIZE]		= KT_RULES_MAX_HEADER_SIZE,
	[KT_LIMIT_HEADERS]		= KT_RULES_MAX_HEADERS,
	[KT_LIMIT_CONNECTIONS]		= KT_RULES_MAX_CONNS,
	[KT_LIMIT_SOURCE_CONNECTIONS]	= KT_RULES_MAX_CONNS,
	[KT_LIMIT_SOURCE_RATE]		= KT_RULES_MAX_SOURCE_RATE,
	[KT_LIMIT_BACKLOG]		= KT_RULES_MAX_BACKLOG,
};

static const char *const kt_rules_limit_why[KT_LIMIT_COUNT] = {
	[KT_LIMIT_REQUEST_LINE]	= "request-line limit out of range (at most 65536)",
	[KT_LIMIT_HEADER_SIZE]	= "header-size limit out of range (at most 1048576)",
	[KT_LIMIT_HEADERS]	= "headers limit out of range (at most 1000)",
	[KT_LIMIT_CONNECTIONS]	= "connections limit out of range (at most 1000000)",
	[KT_LIMIT_SOURCE_CONNECTIONS] =
		"source-connections limit out of range (at most 1000000)",
	[KT_LIMIT_SOURCE_RATE]	= "source-rate limit out of range (at most 1000000)",
	[KT_LIMIT_BACKLOG]	= "backlog limit out of range (at most 65535)",
};

/* ---- validation ------------------------------------------------------------ */

struct kt_rules_vctx {
	struct kt_rules *r;
	const char *why;
	u64 work;		/* list items checked, bounded by budget */
	u64 budget;
	u32 next_hash;		/* hashes and DFAs are checked once each: */
	u32 next_dfa;		/* references must be strictly increasing */
};

static bool kt_rules_bad(struct kt_rules_vctx *v, const char *why)
{
	if (!v->why)
		v->why = why;
	return false;
}

static bool kt_rules_v_str(struct kt_rules_vctx *v, u32 off, u32 len)
{
	if ((u64)off + len > v->r->str_len)
		return kt_rules_bad(v, "string out of range");
	return true;
}

static bool kt_rules_v_words(struct kt_rules_vctx *v, u32 off, u64 n)
{
	if ((u64)off + n > v->r->nwords)
		return kt_rules_bad(v, "array out of range");
	return true;
}

/* A list at words[off]: count, then count items each < bound. */
static bool kt_rules_v_list(struct kt_rules_vctx *v, u32 off, u32 bound,
			    bool ascending)
{
	const u32 *w = v->r->words;
	u32 n, i, x, prev = 0;

	if (off >= v->r->nwords)
		return kt_rules_bad(v, "list offset out of range");
	n = w[off];
	if (n > v->r->nwords - off - 1)
		return kt_rules_bad(v, "list length out of range");
	v->work += (u64)n + 1;
	if (v->work > v->budget)
		return kt_rules_bad(v, "table too complex to validate");
	for (i = 0; i < n; i++) {
		x = w[off + 1 + i];
		if (x >= bound)
			return kt_rules_bad(v, "list item out of range");
		if (ascending && i && x <= prev)
			return kt_rules_bad(v, "list not in ascending order");
		prev = x;
	}
	return true;
}

static bool kt_rules_v_hash(struct kt_rules_vctx *v, u32 idx, u32 bound)
{
	const struct kt_rules *r = v->r;
	const u32 *h, *w = r->words;
	u32 nb, ne, b, e, first, cnt;

	if (idx >= r->nhashes || idx < v->next_hash)
		return kt_rules_bad(v, "bad hash table reference");
	v->next_hash = idx + 1;
	h = r->hash + (size_t)idx * kt_rules_recw[KT_R_S_HASH];
	nb = h[KT_H_NBUCKETS];
	ne = h[KT_H_NENTRIES];
	if (!nb || nb > KT_HASH_MAX_BUCKETS || (nb & (nb - 1)))
		return kt_rules_bad(v, "hash bucket count not a power of two");
	if (h[KT_H_FOLD] > 1)
		return kt_rules_bad(v, "bad hash flags");
	if (!kt_rules_v_words(v, h[KT_H_BUCKETS], 2ULL * nb) ||
	    !kt_rules_v_words(v, h[KT_H_ENTRIES], 3ULL * ne))
		return false;
	v->work += (u64)nb + ne;
	for (b = 0; b < nb; b++) {
		first = w[h[KT_H_BUCKETS] + 2 * b];
		cnt = w[h[KT_H_BUCKETS] + 2 * b + 1];
		if ((u64)first + cnt > ne)
			return kt_rules_bad(v, "hash bucket out of range");
	}
	for (e = 0; e < ne; e++) {
		const u32 *ent = w + h[KT_H_ENTRIES] + 3 * (size_t)e;

		if (!kt_rules_v_str(v, ent[0], ent[1]) ||
		    !kt_rules_v_list(v, ent[2], bound, false))
			return false;
	}
	return true;
}

static bool kt_rules_v_dfa(struct kt_rules_vctx *v, u32 idx, u32 npreds)
{
	const struct kt_rules *r = v->r;
	const u32 *d, *w = r->words, *row;
	const u8 *cmap;
	u32 ns, nc, s, c, stride;

	if (idx >= r->ndfas || idx < v->next_dfa)
		return kt_rules_bad(v, "bad automaton reference");
	v->next_dfa = idx + 1;
	d = r->dfa + (size_t)idx * kt_rules_recw[KT_R_S_DFA];
	ns = d[KT_D_NSTATES];
	nc = d[KT_D_NCLASSES];
	if (!ns || ns > KT_RULES_MAX_STATES || !nc || nc > 256)
		return kt_rules_bad(v, "bad automaton size");
	if (d[KT_D_START] >= ns || d[KT_D_FLAGS])
		return kt_rules_bad(v, "bad automaton header");
	stride = nc + 2;
	if (!kt_rules_v_words(v, d[KT_D_CLASSMAP], 64) ||
	    !kt_rules_v_words(v, d[KT_D_ROWS], (u64)ns * stride))
		return false;
	cmap = (const u8 *)(w + d[KT_D_CLASSMAP]);
	for (c = 0; c < 256; c++)
		if (cmap[c] >= nc)
			return kt_rules_bad(v, "automaton class out of range");
	v->work += (u64)ns * stride;
	for (s = 0; s < ns; s++) {
		row = w + d[KT_D_ROWS] + (size_t)s * stride;
		if (!kt_rules_v_list(v, row[0], npreds, false) ||
		    !kt_rules_v_list(v, row[1], npreds, false))
			return false;
		for (c = 0; c < nc; c++) {
			if (row[2 + c] >= ns)
				return kt_rules_bad(v, "automaton transition out of range");
			if (!s && row[2 + c])
				return kt_rules_bad(v, "automaton state 0 is not dead");
		}
		if (!s && (w[row[0]] || w[row[1]]))
			return kt_rules_bad(v, "automaton state 0 has outputs");
	}
	return true;
}

static bool kt_rules_v_code(struct kt_rules_vctx *v, u32 off, u32 len,
			    u32 npreds)
{
	const u32 *w = v->r->words;
	u32 i, depth = 0, op, arg;

	if (!len || !kt_rules_v_words(v, off, len))
		return kt_rules_bad(v, "bad rule code range");
	v->work += len;
	if (v->work > v->budget)
		return kt_rules_bad(v, "table too complex to validate");
	for (i = 0; i < len; i++) {
		op = w[off + i] >> 28;
		arg = w[off + i] & 0x0fffffff;
		switch (op) {
		case KT_OP_PRED:
			if (arg >= npreds)
				return kt_rules_bad(v, "rule uses an unknown predicate");
			fallthrough;
		case KT_OP_TRUE:
			if (op == KT_OP_TRUE && arg)
				return kt_rules_bad(v, "bad rule instruction");
			if (++depth > KT_OP_STACK)
				return kt_rules_bad(v, "rule too deeply nested");
			break;
		case KT_OP_NOT:
			if (arg || depth < 1)
				return kt_rules_bad(v, "bad rule instruction");
			break;
		case KT_OP_AND:
		case KT_OP_OR:
			if (arg || depth < 2)
				return kt_rules_bad(v, "bad rule instruction");
			depth--;
			break;
		default:
			return kt_rules_bad(v, "bad rule instruction");
		}
	}
	if (depth != 1)
		return kt_rules_bad(v, "rule code leaves a bad stack");
	return true;
}

static bool kt_rules_v_addr(struct kt_rules_vctx *v, const u32 *a, u32 family)
{
	if (family == KT_MATCH_AF_INET) {
		if (a[1] || a[2] || a[3])
			return kt_rules_bad(v, "bad IPv4 address");
		return true;
	}
	if (family != KT_MATCH_AF_INET6)
		return kt_rules_bad(v, "bad address family");
	return true;
}

static bool kt_rules_v_field_ref(struct kt_rules_vctx *v, const u32 *fields,
				 u32 nfields, u32 fi, u32 kind)
{
	if (fi == KT_RULES_NONE)
		return true;
	if (fi >= nfields ||
	    fields[(size_t)fi * kt_rules_recw[KT_R_S_FIELD] + KT_F_KIND] != kind)
		return kt_rules_bad(v, "bad field reference");
	return true;
}

/* A name hash: every value list holds field indexes of the given kind. */
static bool kt_rules_v_names(struct kt_rules_vctx *v, u32 hidx,
			     const u32 *fields, u32 nfields, u32 kind)
{
	const u32 *h, *w = v->r->words;
	u32 e, i, n, off;

	if (hidx == KT_RULES_NONE)
		return true;
	if (!kt_rules_v_hash(v, hidx, nfields))
		return false;
	h = v->r->hash + (size_t)hidx * kt_rules_recw[KT_R_S_HASH];
	for (e = 0; e < h[KT_H_NENTRIES]; e++) {
		off = w[h[KT_H_ENTRIES] + 3 * (size_t)e + 2];
		n = w[off];
		for (i = 0; i < n; i++)
			if (!kt_rules_v_field_ref(v, fields, nfields,
						  w[off + 1 + i], kind))
				return false;
	}
	return true;
}

/*
 * A redirect's location goes into the switch's own answer as the value of
 * a Location field: non-empty, and no byte that could end the field or
 * split the answer (CR, LF, any other control byte, DEL) nor a space.
 */
static bool kt_rules_v_location(struct kt_rules_vctx *v, u32 off, u32 len)
{
	const u8 *p;
	u32 i;

	if (!kt_rules_v_str(v, off, len))
		return false;
	if (!len)
		return kt_rules_bad(v, "empty redirect location");
	v->work += len;
	if (v->work > v->budget)
		return kt_rules_bad(v, "table too complex to validate");
	p = v->r->str + off;
	for (i = 0; i < len; i++)
		if (p[i] <= 0x20 || p[i] == 0x7f)
			return kt_rules_bad(v, "control byte or space in redirect location");
	return true;
}

/*
 * A rule's action, exactly as the compiler emits it: a route has a known
 * pool and no status; a block, redirect or answer has no pool and an
 * allowed status; only a redirect has a location, only an answer a body
 * (both in the location words; the body may be empty).
 */
static bool kt_rules_v_action(struct kt_rules_vctx *v, const u32 *ru)
{
	u32 action = ru[KT_RU_ACTION], status = ru[KT_RU_STATUS];

	switch (action) {
	case KT_ACTION_ROUTE:
		if (ru[KT_RU_POOL] >= v->r->npools)
			return kt_rules_bad(v, "rule routes to an unknown pool");
		if (status)
			return kt_rules_bad(v, "route rule with a status");
		break;
	case KT_ACTION_BLOCK:
		if (status < 400 || status > 599)
			return kt_rules_bad(v, "block status not 400..599");
		break;
	case KT_ACTION_REDIRECT:
		if (status != 301 && status != 302 && status != 303 &&
		    status != 307 && status != 308)
			return kt_rules_bad(v, "redirect status not 301, 302, 303, 307 or 308");
		break;
	case KT_ACTION_ANSWER:
		if (status < KT_RULES_ANSWER_MIN || status > KT_RULES_ANSWER_MAX ||
		    status == 101)
			return kt_rules_bad(v, "answer status not 100..599 (or 101)");
		break;
	default:
		return kt_rules_bad(v, "bad rule action");
	}
	if (action != KT_ACTION_ROUTE && ru[KT_RU_POOL] != KT_RULES_NONE)
		return kt_rules_bad(v, "rule has a pool but does not route");
	if (action == KT_ACTION_REDIRECT)
		return kt_rules_v_location(v, ru[KT_RU_LOC_OFF],
					   ru[KT_RU_LOC_LEN]);
	if (action == KT_ACTION_ANSWER) {
		if (ru[KT_RU_LOC_LEN] > KT_RULES_MAX_ANSWER_BODY)
			return kt_rules_bad(v, "answer body over 4096 bytes");
		return kt_rules_v_str(v, ru[KT_RU_LOC_OFF], ru[KT_RU_LOC_LEN]);
	}
	if (ru[KT_RU_LOC_OFF] || ru[KT_RU_LOC_LEN])
		return kt_rules_bad(v, "rule has a location but does not redirect");
	return true;
}

/* RFC 9110 tchar: what a method or a cookie name (RFC 6265) is made of. */
static bool kt_rules_tchar(u8 c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	    (c >= 'A' && c <= 'Z'))
		return true;
	switch (c) {
	case '!': case '#': case '$': case '%': case '&': case '\'':
	case '*': case '+': case '-': case '.': case '^': case '_':
	case '`': case '|': case '~':
		return true;
	default:
		return false;
	}
}

/* Visible ASCII (VCHAR, no space) */
static inline bool kt_rules_vchar(u8 c)
{
	return c > 0x20 && c < 0x7f;
}

/* A string of the string section: in range, counted against the budget. */
static const u8 *kt_rules_v_strp(struct kt_rules_vctx *v, u32 off, u32 len)
{
	if (!kt_rules_v_str(v, off, len))
		return NULL;
	v->work += len;
	if (v->work > v->budget) {
		kt_rules_bad(v, "table too complex to validate");
		return NULL;
	}
	return v->r->str + off;
}

/*
 * An HTTP check's request line, without the version: a method token, one
 * space, a path that starts with '/'; visible ASCII only (it goes onto the
 * wire as is).
 */
static bool kt_rules_v_check_request(struct kt_rules_vctx *v, u32 off, u32 len)
{
	static const char why[] =
		"bad health check request (METHOD /path, visible ASCII, at most 1024 bytes)";
	const u8 *p;
	u32 i = 0;

	if (!len || len > KT_RULES_CHECK_REQUEST_MAX)
		return kt_rules_bad(v, why);
	p = kt_rules_v_strp(v, off, len);
	if (!p)
		return false;
	while (i < len && kt_rules_tchar(p[i]))
		i++;
	if (!i || i + 2 > len || p[i] != ' ' || p[i + 1] != '/')
		return kt_rules_bad(v, why);
	for (i += 1; i < len; i++)
		if (!kt_rules_vchar(p[i]))
			return kt_rules_bad(v, why);
	return true;
}

/* Pool words 6..16: the health check. */
static bool kt_rules_v_check(struct kt_rules_vctx *v, const u32 *p)
{
	u32 k, kind = p[KT_P_CHECK], host_len = p[KT_P_HOST_LEN];
	const u8 *h;

	if (kind > KT_CHECK_HTTP)
		return kt_rules_bad(v, "bad health check kind");
	if (kind == KT_CHECK_NONE) {
		for (k = 0; k < KT_P_NCHECK; k++)
			if (p[KT_P_CHECK + k])
				return kt_rules_bad(v, "health check words of a pool without a check not 0");
		return true;
	}
	if (p[KT_P_INTERVAL] < KT_RULES_CHECK_INTERVAL_MIN ||
	    p[KT_P_INTERVAL] > KT_RULES_CHECK_INTERVAL_MAX)
		return kt_rules_bad(v, "health check interval out of range (100 ms .. 1 h)");
	if (p[KT_P_TIMEOUT] < KT_RULES_CHECK_TIMEOUT_MIN ||
	    p[KT_P_TIMEOUT] > KT_RULES_CHECK_TIMEOUT_MAX)
		return kt_rules_bad(v, "health check timeout out of range (10 ms .. 60 s)");
	if (p[KT_P_TIMEOUT] > p[KT_P_INTERVAL])
		return kt_rules_bad(v, "health check timeout longer than its interval");
	if (!p[KT_P_RISE] || p[KT_P_RISE] > KT_RULES_CHECK_COUNT_MAX)
		return kt_rules_bad(v, "health check rise out of range (1..100)");
	if (!p[KT_P_FALL] || p[KT_P_FALL] > KT_RULES_CHECK_COUNT_MAX)
		return kt_rules_bad(v, "health check fall out of range (1..100)");
	if (kind == KT_CHECK_TCP) {
		for (k = KT_P_REQ_OFF; k <= KT_P_EXPECT_HI; k++)
			if (p[k])
				return kt_rules_bad(v, "TCP health check with a request, host or expect");
		return true;
	}
	if (!kt_rules_v_check_request(v, p[KT_P_REQ_OFF], p[KT_P_REQ_LEN]))
		return false;
	if (host_len > KT_RULES_CHECK_HOST_MAX)
		return kt_rules_bad(v, "bad health check host (visible ASCII, at most 255 bytes)");
	h = kt_rules_v_strp(v, p[KT_P_HOST_OFF], host_len);
	if (!h)
		return false;
	for (k = 0; k < host_len; k++)
		if (!kt_rules_vchar(h[k]))
			return kt_rules_bad(v, "bad health check host (visible ASCII, at most 255 bytes)");
	if (p[KT_P_EXPECT_LO] < 100 || p[KT_P_EXPECT_LO] > p[KT_P_EXPECT_HI] ||
	    p[KT_P_EXPECT_HI] > 599)
		return kt_rules_bad(v, "health check expect not 100 <= low <= high <= 599");
	return true;
}

/* Pool words 17..20: persistence. */
static bool kt_rules_v_persist(struct kt_rules_vctx *v, const u32 *p)
{
	u32 k, kind = p[KT_P_PERSIST], len = p[KT_P_COOKIE_LEN];
	const u8 *c;

	switch (kind) {
	case KT_PERSIST_NONE:
		for (k = 1; k < KT_P_NPERSIST; k++)
			if (p[KT_P_PERSIST + k])
				return kt_rules_bad(v, "persistence words of a pool without persistence not 0");
		return true;
	case KT_PERSIST_COOKIE:
		if (p[KT_P_SRC_TIMEOUT])
			return kt_rules_bad(v, "cookie persistence with a source timeout");
		if (!len || len > KT_RULES_COOKIE_MAX)
			return kt_rules_bad(v, "bad persistence cookie name (a token of 1..64 bytes)");
		c = kt_rules_v_strp(v, p[KT_P_COOKIE_OFF], len);
		if (!c)
			return false;
		for (k = 0; k < len; k++)
			if (!kt_rules_tchar(c[k]))
				return kt_rules_bad(v, "bad persistence cookie name (a token of 1..64 bytes)");
		return true;
	case KT_PERSIST_SOURCE:
		if (p[KT_P_COOKIE_OFF] || len)
			return kt_rules_bad(v, "source persistence with a cookie name");
		if (p[KT_P_SRC_TIMEOUT] < KT_RULES_PERSIST_TIMEOUT_MIN ||
		    p[KT_P_SRC_TIMEOUT] > KT_RULES_PERSIST_TIMEOUT_MAX)
			return kt_rules_bad(v, "source persistence timeout out of range (1 s .. 24 h)");
		return true;
	default:
		return kt_rules_bad(v, "bad persistence kind");
	}
}

static bool kt_rules_v_pool(struct kt_rules_vctx *v, const u32 *p)
{
	const struct kt_rules *r = v->r;
	u32 k;

	if (!kt_rules_v_str(v, p[KT_P_NAME_OFF], p[KT_P_NAME_LEN]))
		return false;
	if (p[KT_P_SCHED] >= KT_SCHED_COUNT || p[KT_P_FLAGS] ||
	    (u64)p[KT_P_FIRST] + p[KT_P_COUNT] > r->nservers)
		return kt_rules_bad(v, "bad pool");
	for (k = 0; k < KT_P_NRSVD; k++)
		if (p[KT_P_RSVD + k])
			return kt_rules_bad(v, "reserved pool word not 0");
	return kt_rules_v_check(v, p) && kt_rules_v_persist(v, p);
}

static bool kt_rules_v_service(struct kt_rules_vctx *v, const u32 *s,
			       u32 *rule_next, u32 *pred_next, u32 *field_next)
{
	const struct kt_rules *r = v->r;
	u32 nrules = s[KT_S_NRULES], npreds = s[KT_S_NPREDS];
	u32 nfields = s[KT_S_NFIELDS];
	const u32 *rules, *fields, *f;
	u32 i, k, kind;
	u64 scratch;

	if (!kt_rules_v_str(v, s[KT_S_NAME_OFF], s[KT_S_NAME_LEN]) ||
	    !kt_rules_v_addr(v, s + KT_S_ADDR, s[KT_S_FAMILY]))
		return false;
	if (!s[KT_S_PORT] || s[KT_S_PORT] > 65535)
		return kt_rules_bad(v, "bad service port");
	if (s[KT_S_FLAGS] & ~KT_SERVICE_FLAGS)
		return kt_rules_bad(v, "unknown service flags");
	if ((s[KT_S_FLAGS] & KT_SERVICE_XFF_MASK) == KT_SERVICE_XFF_MASK)
		return kt_rules_bad(v, "X-Forwarded-For both append and replace");
	if ((s[KT_S_FLAGS] & KT_SERVICE_RAW) &&
	    (s[KT_S_FLAGS] & KT_SERVICE_XFF_MASK))
		return kt_rules_bad(v, "X-Forwarded-For on a raw service");
	if ((s[KT_S_FLAGS] & KT_SERVICE_XFP) &&
	    (!(s[KT_S_FLAGS] & KT_SERVICE_TLS) || (s[KT_S_FLAGS] & KT_SERVICE_RAW)))
		return kt_rules_bad(v, "X-Forwarded-Proto on a service that is not HTTPS");
	for (k = 0; k < KT_LIMIT_COUNT; k++)
		if (s[kt_rules_limit_word(k)] > kt_rules_limit_max[k])
			return kt_rules_bad(v, kt_rules_limit_why[k]);
	for (k = 0; k < KT_TIMEOUT_COUNT; k++)
		if (s[KT_S_TIMEOUTS + k] > KT_RULES_MAX_TIMEOUT_MS)
			return kt_rules_bad(v, "service timeout over 24 hours");
	if (s[KT_S_LOG_MODE] > KT_LOG_SAMPLE)
		return kt_rules_bad(v, "bad log mode");
	if (s[KT_S_LOG_MODE] == KT_LOG_SAMPLE) {
		if (s[KT_S_LOG_SAMPLE] < KT_RULES_LOG_SAMPLE_MIN ||
		    s[KT_S_LOG_SAMPLE] > KT_RULES_LOG_SAMPLE_MAX)
			return kt_rules_bad(v, "log sample out of range (2..65535)");
	} else if (s[KT_S_LOG_SAMPLE]) {
		return kt_rules_bad(v, "log sample without log mode sample");
	}
	for (k = 0; k < KT_S_NRSVD; k++)
		if (s[KT_S_RSVD + k])
			return kt_rules_bad(v, "reserved service word not 0");
	/* services own consecutive, disjoint ranges of rules/preds/fields */
	if (s[KT_S_RULE_FIRST] != *rule_next ||
	    s[KT_S_PRED_FIRST] != *pred_next ||
	    s[KT_S_FIELD_FIRST] != *field_next ||
	    nrules > r->nrules - *rule_next ||
	    npreds > r->npreds - *pred_next ||
	    nfields > r->nfields - *field_next ||
	    npreds > 0x0fffffff)
		return kt_rules_bad(v, "bad service ranges");
	*rule_next += nrules;
	*pred_next += npreds;
	*field_next += nfields;
	rules = r->rule + (size_t)s[KT_S_RULE_FIRST] * kt_rules_recw[KT_R_S_RULE];
	fields = r->field + (size_t)s[KT_S_FIELD_FIRST] * kt_rules_recw[KT_R_S_FIELD];

	for (i = 0; i < nrules; i++) {
		const u32 *ru = rules + (size_t)i * kt_rules_recw[KT_R_S_RULE];

		if (!kt_rules_v_action(v, ru) ||
		    !kt_rules_v_code(v, ru[KT_RU_CODE_OFF], ru[KT_RU_CODE_LEN],
				     npreds))
			return false;
	}
	for (i = 0; i < npreds; i++)
		if (!kt_rules_v_list(v, r->pred[s[KT_S_PRED_FIRST] + i], nrules,
				     true))
			return false;
	if (!kt_rules_v_list(v, s[KT_S_ALWAYS], nrules, true))
		return false;
	for (i = 0; i < nfields; i++) {
		f = fields + (size_t)i * kt_rules_recw[KT_R_S_FIELD];
		kind = f[KT_F_KIND];
		if (kind < KT_FK_METHOD || kind > KT_FK_SRC6 || f[KT_F_PAD])
			return kt_rules_bad(v, "bad field kind");
		if (f[KT_F_EXISTS] != KT_RULES_NONE && f[KT_F_EXISTS] >= npreds)
			return kt_rules_bad(v, "bad field predicate");
		if (!kt_rules_v_str(v, f[KT_F_NAME_OFF], f[KT_F_NAME_LEN]))
			return false;
		if (f[KT_F_HASH] != KT_RULES_NONE &&
		    !kt_rules_v_hash(v, f[KT_F_HASH], npreds))
			return false;
		if (f[KT_F_LIT] != KT_RULES_NONE &&
		    !kt_rules_v_dfa(v, f[KT_F_LIT], npreds))
			return false;
		if (f[KT_F_RE] != KT_RULES_NONE &&
		    !kt_rules_v_dfa(v, f[KT_F_RE], npreds))
			return false;
	}
	if (!kt_rules_v_field_ref(v, fields, nfields, s[KT_S_F_METHOD], KT_FK_METHOD) ||
	    !kt_rules_v_field_ref(v, fields, nfields, s[KT_S_F_HOST], KT_FK_HOST) ||
	    !kt_rules_v_field_ref(v, fields, nfields, s[KT_S_F_PATH], KT_FK_PATH) ||
	    !kt_rules_v_field_ref(v, fields, nfields, s[KT_S_F_SRC4], KT_FK_SRC4) ||
	    !kt_rules_v_field_ref(v, fields, nfields, s[KT_S_F_SRC6], KT_FK_SRC6) ||
	    !kt_rules_v_names(v, s[KT_S_H_HEADER], fields, nfields, KT_FK_HEADER) ||
	    !kt_rules_v_names(v, s[KT_S_H_COOKIE], fields, nfields, KT_FK_COOKIE) ||
	    !kt_rules_v_names(v, s[KT_S_H_QUERY], fields, nfields, KT_FK_QUERY))
		return false;
	scratch = ((u64)npreds + 31) / 32 + npreds;
	if (scratch > v->r->scratch_words)
		v->r->scratch_words = (u32)scratch;
	return true;
}

int kt_rules_validate(struct kt_rules *r, const void *blob, size_t len,
		      const char **why)
{
	struct kt_rules_vctx v = { .r = r };
	const u32 *w = blob, *p, *sv;
	u32 nw, i, off, cnt, rule_next = 0, pred_next = 0, field_next = 0;
	const u32 **sect[KT_R_NSECT] = {
		NULL, &r->pool, &r->server, &r->service, &r->rule,
		&r->pred, &r->field, &r->hash, &r->dfa, &r->words,
	};
	u32 *count[KT_R_NSECT] = {
		&r->str_len, &r->npools, &r->nservers, &r->nservices, &r->nrules,
		&r->npreds, &r->nfields, &r->nhashes, &r->ndfas, &r->nwords,
	};

	memset(r, 0, sizeof(*r));
	if (!blob || ((uintptr_t)blob & 3))
		goto bad_align;
	if (len < (KT_R_HDR_WORDS + KT_R_DIR_WORDS) * 4 || (len & 3) ||
	    len > KT_RULES_MAX_SIZE) {
		kt_rules_bad(&v, "bad table size");
		goto out;
	}
	nw = (u32)(len / 4);
	if (w[KT_R_H_MAGIC] != KT_RULES_MAGIC) {
		kt_rules_bad(&v, "not a rules table (bad magic or byte order)");
		goto out;
	}
	if ((w[KT_R_H_VERSION] >> 16) != KT_RULES_VERSION_MAJOR) {
		kt_rules_bad(&v, "unsupported rules table version");
		goto out;
	}
	if (w[KT_R_H_LEN] != len || w[KT_R_H_FLAGS] ||
	    w[KT_R_H_NSECT] != KT_R_NSECT) {
		kt_rules_bad(&v, "bad table header");
		goto out;
	}
	if (w[KT_R_H_RSVD] || w[KT_R_H_RSVD + 1]) {
		kt_rules_bad(&v, "reserved table header word not 0");
		goto out;
	}
	if (w[KT_R_H_MAX_CONNS] > KT_RULES_MAX_NS_CONNS) {
		kt_rules_bad(&v, "namespace connection limit out of range (at most 10000000)");
		goto out;
	}
	r->w = w;
	r->nwords_total = nw;
	r->max_conns = w[KT_R_H_MAX_CONNS];
	for (i = 0; i < KT_R_NSECT; i++) {
		off = w[KT_R_HDR_WORDS + 2 * i];
		cnt = w[KT_R_HDR_WORDS + 2 * i + 1];
		if (off < KT_R_HDR_WORDS + KT_R_DIR_WORDS || off > nw) {
			kt_rules_bad(&v, "section out of range");
			goto out;
		}
		if (i == KT_R_S_STR) {
			if (cnt > (u64)(nw - off) * 4) {
				kt_rules_bad(&v, "section out of range");
				goto out;
			}
			r->str = (const u8 *)(w + off);
		} else {
			if ((u64)cnt * kt_rules_recw[i] > nw - off) {
				kt_rules_bad(&v, "section out of range");
				goto out;
			}
			*sect[i] = w + off;
		}
		*count[i] = cnt;
	}
	if (!r->nwords || r->words[0]) {
		kt_rules_bad(&v, "word heap must start with the empty list");
		goto out;
	}
	/* what the kernel allocates per service, pool and server is bounded */
	if (r->nservices > KT_RULES_MAX_SERVICES) {
		kt_rules_bad(&v, "too many services (at most 1024)");
		goto out;
	}
	if (r->npools > KT_RULES_MAX_POOLS) {
		kt_rules_bad(&v, "too many pools (at most 16384)");
		goto out;
	}
	if (r->nservers > KT_RULES_MAX_SERVERS) {
		kt_rules_bad(&v, "too many servers (at most 65536)");
		goto out;
	}
	v.budget = 4ULL * nw + (1ULL << 20);

	for (i = 0; i < r->npools; i++) {
		p = r->pool + (size_t)i * kt_rules_recw[KT_R_S_POOL];
		if (!kt_rules_v_pool(&v, p))
			goto out;
	}
	for (i = 0; i < r->nservers; i++) {
		p = r->server + (size_t)i * kt_rules_recw[KT_R_S_SERVER];
		if (!kt_rules_v_addr(&v, p + KT_SV_ADDR, p[KT_SV_FAMILY]))
			goto out;
		if (!p[KT_SV_PORT] || p[KT_SV_PORT] > 65535 ||
		    p[KT_SV_WEIGHT] > 65535 || p[KT_SV_STATE] > KT_SERVER_DOWN) {
			kt_rules_bad(&v, "bad server");
			goto out;
		}
		if (!p[KT_SV_ID_LO] && !p[KT_SV_ID_HI]) {
			kt_rules_bad(&v, "server persistence id is 0");
			goto out;
		}
	}
	for (i = 0; i < r->nservices; i++) {
		sv = r->service + (size_t)i * kt_rules_recw[KT_R_S_SERVICE];
		if (!kt_rules_v_service(&v, sv, &rule_next, &pred_next,
					&field_next))
			goto out;
	}
	if (rule_next != r->nrules || pred_next != r->npreds ||
	    field_next != r->nfields) {
		kt_rules_bad(&v, "rules, predicates or fields not owned by a service");
		goto out;
	}
	return 0;

bad_align:
	kt_rules_bad(&v, "table not 4-byte aligned");
out:
	if (why)
		*why = v.why;
	memset(r, 0, sizeof(*r));
	return -1;
}

/* ---- configuration views --------------------------------------------------- */

u32 kt_rules_nservices(const struct kt_rules *r)
{
	return r->nservices;
}

u32 kt_rules_npools(const struct kt_rules *r)
{
	return r->npools;
}

u32 kt_rules_max_conns(const struct kt_rules *r)
{
	return r->max_conns;
}

static void kt_rules_get_addr(u8 *out, const u32 *a)
{
	memcpy(out, a, 16);
}

void kt_rules_service(const struct kt_rules *r, u32 i,
		      struct kt_rules_service_info *out)
{
	const u32 *s = r->service + (size_t)i * kt_rules_recw[KT_R_S_SERVICE];
	u32 k;

	out->name.ptr = r->str + s[KT_S_NAME_OFF];
	out->name.len = s[KT_S_NAME_LEN];
	out->family = (u8)s[KT_S_FAMILY];
	kt_rules_get_addr(out->addr, s + KT_S_ADDR);
	out->port = (u16)s[KT_S_PORT];
	out->flags = s[KT_S_FLAGS];
	for (k = 0; k < KT_LIMIT_COUNT; k++)
		out->limits[k] = s[kt_rules_limit_word(k)];
	for (k = 0; k < KT_TIMEOUT_COUNT; k++)
		out->timeouts_ms[k] = s[KT_S_TIMEOUTS + k];
	out->nrules = s[KT_S_NRULES];
	out->log_mode = s[KT_S_LOG_MODE];
	out->log_sample = s[KT_S_LOG_SAMPLE];
}

void kt_rules_pool(const struct kt_rules *r, u32 i,
		   struct kt_rules_pool_info *out)
{
	const u32 *p = r->pool + (size_t)i * kt_rules_recw[KT_R_S_POOL];

	out->name.ptr = r->str + p[KT_P_NAME_OFF];
	out->name.len = p[KT_P_NAME_LEN];
	out->scheduler = p[KT_P_SCHED];
	out->first_server = p[KT_P_FIRST];
	out->nservers = p[KT_P_COUNT];
	out->check.kind = p[KT_P_CHECK];
	out->check.interval_ms = p[KT_P_INTERVAL];
	out->check.timeout_ms = p[KT_P_TIMEOUT];
	out->check.rise = p[KT_P_RISE];
	out->check.fall = p[KT_P_FALL];
	out->check.request.ptr = r->str + p[KT_P_REQ_OFF];
	out->check.request.len = p[KT_P_REQ_LEN];
	out->check.host.ptr = r->str + p[KT_P_HOST_OFF];
	out->check.host.len = p[KT_P_HOST_LEN];
	out->check.expect_lo = p[KT_P_EXPECT_LO];
	out->check.expect_hi = p[KT_P_EXPECT_HI];
	out->persist.kind = p[KT_P_PERSIST];
	out->persist.cookie.ptr = r->str + p[KT_P_COOKIE_OFF];
	out->persist.cookie.len = p[KT_P_COOKIE_LEN];
	out->persist.source_timeout_ms = p[KT_P_SRC_TIMEOUT];
}

void kt_rules_server(const struct kt_rules *r, u32 i,
		     struct kt_rules_server_info *out)
{
	const u32 *p = r->server + (size_t)i * kt_rules_recw[KT_R_S_SERVER];

	out->family = (u8)p[KT_SV_FAMILY];
	kt_rules_get_addr(out->addr, p + KT_SV_ADDR);
	out->port = (u16)p[KT_SV_PORT];
	out->weight = (u16)p[KT_SV_WEIGHT];
	out->state = (u8)p[KT_SV_STATE];
	out->id = (u64)p[KT_SV_ID_HI] << 32 | p[KT_SV_ID_LO];
}

u32 kt_match_scratch_words(const struct kt_rules *r)
{
	return r->scratch_words;
}

void kt_match_scratch_init(u32 *scratch, u32 nwords)
{
	if (nwords)
		memset(scratch, 0, (size_t)nwords * sizeof(u32));
}

/* ---- matching -------------------------------------------------------------- */

struct kt_match_ctx {
	const struct kt_rules *r;
	const u32 *words;
	const u32 *fields;
	u32 *bits;		/* one bit per predicate */
	u32 *truelist;		/* predicates that hold, in discovery order */
	u32 ntrue;
};

static inline u8 kt_match_lower(u8 c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

static inline void kt_match_mark(struct kt_match_ctx *c, u32 p)
{
	u32 m = 1U << (p & 31);

	if (!(c->bits[p >> 5] & m)) {
		c->bits[p >> 5] |= m;
		c->truelist[c->ntrue++] = p;
	}
}

static void kt_match_mark_list(struct kt_match_ctx *c, u32 off)
{
	const u32 *l = c->words + off;
	u32 i, n = l[0];

	for (i = 0; i < n; i++)
		kt_match_mark(c, l[1 + i]);
}

static u32 kt_match_fnv(const u8 *s, u32 n, bool fold)
{
	u32 h = 0x811c9dc5U, i;

	for (i = 0; i < n; i++) {
		h ^= fold ? kt_match_lower(s[i]) : s[i];
		h *= 0x01000193U;
	}
	return h;
}

/* Value list offset for key s[0..n) in hash table idx, or KT_RULES_NONE. */
static u32 kt_match_hash_find(const struct kt_rules *r, u32 idx,
			      const u8 *s, u32 n)
{
	const u32 *h = r->hash + (size_t)idx * kt_rules_recw[KT_R_S_HASH];
	const u32 *w = r->words, *b, *ent;
	bool fold = h[KT_H_FOLD];
	u32 e, i, end;
	const u8 *k;

	b = w + h[KT_H_BUCKETS] +
	    2 * (kt_match_fnv(s, n, fold) & (h[KT_H_NBUCKETS] - 1));
	end = b[0] + b[1];
	for (e = b[0]; e < end; e++) {
		ent = w + h[KT_H_ENTRIES] + 3 * (size_t)e;
		if (ent[1] != n)
			continue;
		k = r->str + ent[0];
		if (fold) {
			for (i = 0; i < n; i++)
				if (kt_match_lower(s[i]) != k[i])
					break;
			if (i == n)
				return ent[2];
		} else if (!n || !memcmp(k, s, n)) {
			return ent[2];
		}
	}
	return KT_RULES_NONE;
}

static void kt_match_dfa(struct kt_match_ctx *c, u32 idx, const u8 *s, u32 n)
{
	const u32 *d = c->r->dfa + (size_t)idx * kt_rules_recw[KT_R_S_DFA];
	const u8 *cmap = (const u8 *)(c->words + d[KT_D_CLASSMAP]);
	const u32 *rows = c->words + d[KT_D_ROWS];
	u32 stride = d[KT_D_NCLASSES] + 2, st, i;
	const u32 *row = rows + (size_t)d[KT_D_START] * stride;

	if (row[0])
		kt_match_mark_list(c, row[0]);
	for (i = 0; i < n; i++) {
		st = row[2 + cmap[s[i]]];
		if (!st)
			return;		/* dead: nothing more can match */
		row = rows + (size_t)st * stride;
		if (row[0])
			kt_match_mark_list(c, row[0]);
	}
	if (row[1])
		kt_match_mark_list(c, row[1]);
}

static void kt_match_field(struct kt_match_ctx *c, u32 fi, const u8 *s, u32 n)
{
	const u32 *f = c->fields + (size_t)fi * kt_rules_recw[KT_R_S_FIELD];
	u32 l;

	if (f[KT_F_EXISTS] != KT_RULES_NONE)
		kt_match_mark(c, f[KT_F_EXISTS]);
	if (f[KT_F_HASH] != KT_RULES_NONE) {
		l = kt_match_hash_find(c->r, f[KT_F_HASH], s, n);
		if (l != KT_RULES_NONE)
			kt_match_mark_list(c, l);
	}
	if (f[KT_F_LIT] != KT_RULES_NONE)
		kt_match_dfa(c, f[KT_F_LIT], s, n);
	if (f[KT_F_RE] != KT_RULES_NONE)
		kt_match_dfa(c, f[KT_F_RE], s, n);
}

/* All fields named s[0..n) in name hash hidx get value v[0..vn). */
static void kt_match_named(struct kt_match_ctx *c, u32 hidx, const u8 *s,
			   u32 n, const u8 *v, u32 vn)
{
	u32 l = kt_match_hash_find(c->r, hidx, s, n), i;

	if (l == KT_RULES_NONE)
		return;
	for (i = 0; i < c->words[l]; i++)
		kt_match_field(c, c->words[l + 1 + i], v, vn);
}

static bool kt_match_is_cookie(const struct kt_match_slice *name)
{
	static const char ck[] = "cookie";
	u32 i;

	if (name->len != 6)
		return false;
	for (i = 0; i < 6; i++)
		if (kt_match_lower(name->ptr[i]) != (u8)ck[i])
			return false;
	return true;
}

/* Cookie: a=b; c=d -- pieces trimmed of SP/HTAB, split at the first '='. */
static void kt_match_cookies(struct kt_match_ctx *c, u32 hidx,
			     const u8 *s, u32 n)
{
	u32 i = 0, j, a, b, eq;

	while (i <= n) {
		for (j = i; j < n && s[j] != ';'; j++)
			;
		a = i;
		b = j;
		while (a < b && (s[a] == ' ' || s[a] == '\t'))
			a++;
		while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
			b--;
		for (eq = a; eq < b && s[eq] != '='; eq++)
			;
		if (eq < b)
			kt_match_named(c, hidx, s + a, eq - a, s + eq + 1,
				       b - eq - 1);
		i = j + 1;
	}
}

/* Query: a=b&c -- split at '&', then at the first '=' (none: empty value). */
static void kt_match_query(struct kt_match_ctx *c, u32 hidx,
			   const u8 *s, u32 n)
{
	u32 i = 0, j, eq;

	while (i < n) {
		for (j = i; j < n && s[j] != '&'; j++)
			;
		if (j > i) {
			for (eq = i; eq < j && s[eq] != '='; eq++)
				;
			if (eq < j)
				kt_match_named(c, hidx, s + i, eq - i,
					       s + eq + 1, j - eq - 1);
			else
				kt_match_named(c, hidx, s + i, j - i, s + j, 0);
		}
		i = j + 1;
	}
}

static bool kt_match_eval(const struct kt_match_ctx *c, const u32 *rule)
{
	const u32 *code = c->words + rule[KT_RU_CODE_OFF];
	u32 i, n = rule[KT_RU_CODE_LEN], op, arg;
	u64 st = 0, top;

	for (i = 0; i < n; i++) {
		op = code[i] >> 28;
		arg = code[i] & 0x0fffffff;
		switch (op) {
		case KT_OP_PRED:
			st = (st << 1) | ((c->bits[arg >> 5] >> (arg & 31)) & 1);
			break;
		case KT_OP_TRUE:
			st = (st << 1) | 1;
			break;
		case KT_OP_NOT:
			st ^= 1;
			break;
		case KT_OP_AND:
			top = st & 1;
			st >>= 1;
			if (!top)
				st &= ~1ULL;
			break;
		default:	/* KT_OP_OR, validated */
			top = st & 1;
			st >>= 1;
			st |= top;
			break;
		}
	}
	return st & 1;
}

/* First rule (lowest index < best) in list off whose formula holds. */
static u32 kt_match_scan(const struct kt_match_ctx *c, const u32 *rules,
			 u32 off, u32 best)
{
	const u32 *l = c->words + off;
	u32 i, n = l[0], rid;

	for (i = 0; i < n; i++) {
		rid = l[1 + i];
		if (rid >= best)
			break;
		if (kt_match_eval(c, rules + (size_t)rid * kt_rules_recw[KT_R_S_RULE]))
			return rid;
	}
	return best;
}

u32 kt_match_trace(const struct kt_rules *r, u32 svc,
		   const struct kt_match_req *req, u32 *scratch,
		   struct kt_match_result *res, u32 *preds, u32 cap,
		   u32 *npreds)
{
	const u32 *s = r->service + (size_t)svc * kt_rules_recw[KT_R_S_SERVICE];
	u32 np = s[KT_S_NPREDS], nrules = s[KT_S_NRULES];
	const u32 *rules = r->rule +
			   (size_t)s[KT_S_RULE_FIRST] * kt_rules_recw[KT_R_S_RULE];
	const u32 *ptrig = r->pred + s[KT_S_PRED_FIRST];
	struct kt_match_ctx c = {
		.r = r,
		.words = r->words,
		.fields = r->field +
			  (size_t)s[KT_S_FIELD_FIRST] * kt_rules_recw[KT_R_S_FIELD],
		.bits = scratch,
		.truelist = scratch + (np + 31) / 32,
	};
	const u8 *a = req->addr;
	u32 i, best, hn = s[KT_S_H_HEADER], cn = s[KT_S_H_COOKIE];
	const struct kt_match_header *h;
	const u32 *ru;

	if (s[KT_S_F_METHOD] != KT_RULES_NONE)
		kt_match_field(&c, s[KT_S_F_METHOD], req->method.ptr, req->method.len);
	if (s[KT_S_F_HOST] != KT_RULES_NONE)
		kt_match_field(&c, s[KT_S_F_HOST], req->host.ptr, req->host.len);
	if (s[KT_S_F_PATH] != KT_RULES_NONE)
		kt_match_field(&c, s[KT_S_F_PATH], req->path.ptr, req->path.len);
	if (hn != KT_RULES_NONE || cn != KT_RULES_NONE) {
		for (i = 0; i < req->nheaders; i++) {
			h = &req->headers[i];
			if (hn != KT_RULES_NONE)
				kt_match_named(&c, hn, h->name.ptr, h->name.len,
					       h->value.ptr, h->value.len);
			if (cn != KT_RULES_NONE && kt_match_is_cookie(&h->name))
				kt_match_cookies(&c, cn, h->value.ptr, h->value.len);
		}
	}
	if (s[KT_S_H_QUERY] != KT_RULES_NONE)
		kt_match_query(&c, s[KT_S_H_QUERY], req->query.ptr, req->query.len);
	if (req->family == KT_MATCH_AF_INET6 && !a[0] && !a[1] && !a[2] &&
	    !a[3] && !a[4] && !a[5] && !a[6] && !a[7] && !a[8] && !a[9] &&
	    a[10] == 0xff && a[11] == 0xff) {
		if (s[KT_S_F_SRC4] != KT_RULES_NONE)
			kt_match_field(&c, s[KT_S_F_SRC4], a + 12, 4);
	} else if (req->family == KT_MATCH_AF_INET) {
		if (s[KT_S_F_SRC4] != KT_RULES_NONE)
			kt_match_field(&c, s[KT_S_F_SRC4], a, 4);
	} else if (req->family == KT_MATCH_AF_INET6) {
		if (s[KT_S_F_SRC6] != KT_RULES_NONE)
			kt_match_field(&c, s[KT_S_F_SRC6], a, 16);
	}

	/* rule selection: the lowest-numbered candidate whose formula holds */
	best = kt_match_scan(&c, rules, s[KT_S_ALWAYS], nrules);
	for (i = 0; i < c.ntrue; i++)
		best = kt_match_scan(&c, rules, ptrig[c.truelist[i]], best);

	if (npreds) {
		*npreds = c.ntrue;
		for (i = 0; i < c.ntrue && i < cap; i++)
			preds[i] = c.truelist[i];
	}
	/* leave the scratch zeroed, as documented: bits and true list */
	for (i = 0; i < c.ntrue; i++) {
		c.bits[c.truelist[i] >> 5] = 0;
		c.truelist[i] = 0;
	}

	memset(res, 0, sizeof(*res));
	if (best >= nrules) {
		res->rule = KT_RULES_NONE;
		res->action = KT_ACTION_NONE;
		res->pool = KT_RULES_NONE;
		return KT_RULES_NONE;
	}
	ru = rules + (size_t)best * kt_rules_recw[KT_R_S_RULE];
	res->rule = best;
	res->action = ru[KT_RU_ACTION];
	res->pool = ru[KT_RU_ACTION] == KT_ACTION_ROUTE ? ru[KT_RU_POOL] :
							   KT_RULES_NONE;
	res->status = ru[KT_RU_STATUS];
	/* the location words: a redirect's location or an answer's body */
	if (ru[KT_RU_ACTION] == KT_ACTION_ANSWER) {
		res->body.ptr = r->str + ru[KT_RU_LOC_OFF];
		res->body.len = ru[KT_RU_LOC_LEN];
		res->location.ptr = r->str;
	} else {
		res->location.ptr = r->str + ru[KT_RU_LOC_OFF];
		res->location.len = ru[KT_RU_LOC_LEN];
		res->body.ptr = r->str;
	}
	res->line = ru[KT_RU_LINE];
	return best;
}

u32 kt_match(const struct kt_rules *r, u32 svc, const struct kt_match_req *req,
	     u32 *scratch, struct kt_match_result *res)
{
	return kt_match_trace(r, svc, req, scratch, res, NULL, 0, NULL);
}

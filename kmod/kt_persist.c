// SPDX-License-Identifier: GPL-2.0
/*
 * kt_persist.c - persistence: requests of one client go to the server that
 * served it before, while that server is available, whatever the pool's
 * scheduler would pick.
 *
 * persist cookie NAME  the client names its server: the switch sets
 *                      NAME=<16 hex digits of the server's id> on answers
 *                      (kt_persist_set_cookie, from kt_response.c) and a
 *                      request that carries it (kt_persist_cookie, at
 *                      routing time) prefers that server.  The id comes
 *                      from the rules file (the pool's name and the
 *                      server's `id`, or its address and port), so every
 *                      director that applies the same file agrees on it,
 *                      and an address change keeps it when `id` is given.
 *                      A value that names no server of the pool is ignored.
 *                      The pool keeps its servers sorted by id (built with
 *                      the configuration): a lookup is a binary search.
 * persist source T     client address -> server, as IPVS's -p: an entry is
 *                      remembered for T after its last use.  A table per
 *                      pool of KT_PSRC_SETS sets of KT_PSRC_WAYS entries,
 *                      the least recently used of a set replaced: a
 *                      bounded memory of the most recent clients.
 *
 * Either way, a preferred server that is not available (down, drained,
 * weight 0, cooling down, down by its check) or was already tried for the
 * request is passed over and the scheduler chooses; the source table then
 * remembers the new choice, and an answer of the new server sets its
 * cookie.  The source table is the pool's and goes with its configuration.
 *
 * Context: process or softirq (kt_schedule); the table under the pool's
 * lock (BH).
 */

#include <linux/ctype.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/sort.h>
#include <linux/string.h>

#include "kt_conn.h"

/* The entry of @in's client in @p's source table, or NULL. */
static struct kt_psrc *kt_psrc_find(struct kt_pool *p,
				    const struct kt_sched_in *in)
{
	struct kt_psrc *set = &p->psrc[(in->client_hash & (KT_PSRC_SETS - 1)) *
				       KT_PSRC_WAYS];
	u32 w;

	for (w = 0; w < KT_PSRC_WAYS; w++)
		if (set[w].key == (in->client_hash | 1) &&
		    set[w].family == in->family &&
		    !memcmp(set[w].addr, in->addr, 16))
			return &set[w];
	return NULL;
}

/*
 * The server persistence prefers for this request, if it may take it: its
 * index in @p, or -1.  Context: kt_schedule.
 */
int kt_persist_pick(struct kt_pool *p, const struct kt_sched_in *in,
		    unsigned long now)
{
	struct kt_psrc *e;
	int i = -1;

	switch (p->persist.kind) {
	case KT_PERSIST_COOKIE:
		if (in->cookie_id)
			i = kt_pool_server_by_id(p, in->cookie_id);
		break;
	case KT_PERSIST_SOURCE:
		spin_lock_bh(&p->lock);
		e = kt_psrc_find(p, in);
		if (e && time_before(now, e->last + p->psrc_timeout) &&
		    e->srv < p->nservers) {
			i = e->srv;
			e->last = now;
		}
		spin_unlock_bh(&p->lock);
		break;
	}
	return i >= 0 && kt_sched_usable(p, i, in, now) ? i : -1;
}

/*
 * The scheduler chose server @i for this request: a source table remembers
 * it (a new entry replaces the least recently used of its set).
 */
void kt_persist_note(struct kt_pool *p, const struct kt_sched_in *in, u32 i,
		     unsigned long now)
{
	struct kt_psrc *set, *e;
	u32 w;

	if (p->persist.kind != KT_PERSIST_SOURCE)
		return;
	set = &p->psrc[(in->client_hash & (KT_PSRC_SETS - 1)) * KT_PSRC_WAYS];
	spin_lock_bh(&p->lock);
	e = kt_psrc_find(p, in);
	if (!e) {
		e = &set[0];
		for (w = 1; w < KT_PSRC_WAYS && e->key; w++)
			if (!set[w].key || time_before(set[w].last, e->last))
				e = &set[w];
		e->key = in->client_hash | 1;
		e->family = in->family;
		memcpy(e->addr, in->addr, 16);
	}
	e->srv = i;
	e->last = now;
	spin_unlock_bh(&p->lock);
}

/*
 * The server of @p whose persistence id is @id: its index, or -1.  A binary
 * search of the pool's ids (at most 17 steps for the largest pool), so a
 * client's cookie that names nobody costs as little as one that names a
 * server.
 */
int kt_pool_server_by_id(const struct kt_pool *p, u64 id)
{
	u32 lo = 0, hi = p->ids ? p->nservers : 0;

	while (lo < hi) {
		u32 mid = lo + (hi - lo) / 2;

		if (p->ids[mid].id == id)
			return p->ids[mid].idx;
		if (p->ids[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static int kt_pool_id_cmp(const void *a, const void *b)
{
	u64 x = ((const struct kt_pool_id *)a)->id;
	u64 y = ((const struct kt_pool_id *)b)->id;

	return x < y ? -1 : x > y;
}

/* What kt_persist_init() allocates for pool @pi (the configuration's cost). */
size_t kt_persist_cost(const struct kt_rules_pool_info *pi)
{
	switch (pi->persist.kind) {
	case KT_PERSIST_SOURCE:
		return sizeof(struct kt_psrc) * KT_PSRC_SETS * KT_PSRC_WAYS;
	case KT_PERSIST_COOKIE:
		return sizeof(struct kt_pool_id) * pi->nservers;
	}
	return 0;
}

/*
 * A new configuration's pool @p, its servers set: the source table, or the
 * servers sorted by id.  Context: process (commit), may sleep.
 */
int kt_persist_init(struct kt_pool *p, const struct kt_rules_pool_info *pi)
{
	u32 i;

	switch (pi->persist.kind) {
	case KT_PERSIST_SOURCE:
		p->psrc = kvcalloc(KT_PSRC_SETS * KT_PSRC_WAYS,
				   sizeof(*p->psrc), KT_GFP);
		if (!p->psrc)
			return -ENOMEM;
		p->psrc_timeout = msecs_to_jiffies(pi->persist.source_timeout_ms);
		break;
	case KT_PERSIST_COOKIE:
		if (!p->nservers)
			break;
		p->ids = kvmalloc_array(p->nservers, sizeof(*p->ids), KT_GFP);
		if (!p->ids)
			return -ENOMEM;
		for (i = 0; i < p->nservers; i++) {
			p->ids[i].id = p->servers[i].id;
			p->ids[i].idx = i;
		}
		sort(p->ids, p->nservers, sizeof(*p->ids), kt_pool_id_cmp, NULL);
		break;
	}
	return 0;
}

void kt_persist_free(struct kt_pool *p)
{
	kvfree(p->psrc);
	kvfree(p->ids);
}

/*
 * The value of cookie @name in a Cookie field's value @v (RFC 6265:
 * "a=1; b=2"), as a server id: 16 hex digits, else 0.
 */
static u64 kt_cookie_in(const u8 *v, u32 len, const u8 *name, u32 nlen)
{
	u32 i = 0, start, k;
	u64 id;

	while (i < len) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ';'))
			i++;
		start = i;
		while (i < len && v[i] != ';')
			i++;
		/* v[start, i) is one "name=value" */
		if (i - start != nlen + 1 + 16 || memcmp(v + start, name, nlen) ||
		    v[start + nlen] != '=')
			continue;
		id = 0;
		for (k = start + nlen + 1; k < i; k++) {
			if (!isxdigit(v[k]))
				break;
			id = id << 4 | hex_to_bin(v[k]);
		}
		if (k == i)
			return id;
	}
	return 0;
}

/*
 * The server id the request's Cookie fields name for @p's cookie, or 0.
 * @b is the head, @fields its parsed fields.  Context: routing
 * (preemption off; reads only).
 */
u64 kt_persist_cookie(const struct kt_pool *p, const u8 *b,
		      const struct kt_http_field *fields, u32 nfields)
{
	const struct kt_match_slice *name = &p->persist.cookie;
	u32 i;
	u64 id;

	if (p->persist.kind != KT_PERSIST_COOKIE)
		return 0;
	for (i = 0; i < nfields; i++) {
		const struct kt_http_field *f = &fields[i];

		if (f->name_len != 6 ||
		    strncasecmp((const char *)b + f->name_off, "cookie", 6))
			continue;
		id = kt_cookie_in(b + f->value_off, f->value_len, name->ptr,
				  name->len);
		if (id)
			return id;
	}
	return 0;
}

/*
 * The answer of c->srv goes to a client that did not name that server:
 * add "Set-Cookie: NAME=<id>; Path=/; HttpOnly" to the response head in
 * c->down.  0 or -ENOMEM.
 */
int kt_persist_set_cookie(struct kt_conn *c)
{
	const struct kt_match_slice *name = &c->pool->persist.cookie;
	char line[KT_RULES_COOKIE_MAX + 64];
	int n;

	n = scnprintf(line, sizeof(line),
		      "Set-Cookie: %.*s=%016llx; Path=/; HttpOnly\r\n",
		      (int)name->len, name->ptr,
		      (unsigned long long)c->srv->id);
	return kt_resp_add_line(c, line, n);
}

// SPDX-License-Identifier: GPL-2.0
/*
 * kt_sched.c - the eight LVS scheduling algorithms, with their L7 meaning.
 *
 *   rr     round robin over available servers
 *   wrr    weighted round robin (smooth: no bursts to the heaviest server)
 *   lc     least active connections
 *   wlc    least active connections / weight
 *   dh     destination hashing: rendezvous hash of the request's host and
 *          path (cache affinity; only the failed server's keys move)
 *   sh     source hashing: rendezvous hash of the client address
 *   lblc   locality-based least connection on host and path: a key keeps
 *          its server until that server is overloaded (more active
 *          connections than its weight while another has less than half of
 *          its own) or unavailable, then moves to the wlc choice
 *   lblcr  lblc with a server set per key: the least loaded of the set is
 *          used; the set grows by the wlc choice when it is overloaded and
 *          drops its most loaded member when it has not changed for
 *          KT_LBLCR_TRIM
 *
 * The wlc choice of lblc and lblcr breaks ties among the least loaded
 * servers by rendezvous hashing of the key (as dh does), not by round
 * robin: a key that is new, or was evicted from the bounded table and comes
 * back, lands on the same server as long as the loads are the same.  So
 * with an idle pool lblc chooses exactly what dh chooses.  The table is
 * p->nsets sets of KT_LBLC_WAYS keys (4 sets per server, from 4 to
 * KT_LBLC_SETS_MAX); a new key replaces the least recently used key of its
 * set.
 *
 * A server is available when its state is up, its weight is above zero, it
 * is not in a failure cool-down and its health check (if any) does not say
 * down.  Callers pass servers already tried for
 * this request in @tried so a retry picks another one.
 */

#include <linux/jhash.h>

#include "kt.h"
#include "uapi/ktcpvs.h"

#define KT_LBLCR_TRIM	(360 * HZ)	/* LVS: 6 minutes */

static bool kt_srv_available(const struct kt_server *s, unsigned long now)
{
	return READ_ONCE(s->state) == KT_SERVER_UP && READ_ONCE(s->weight) &&
	       !time_before(now, READ_ONCE(s->down_until)) &&
	       READ_ONCE(s->check_state) != KTCPVS_CHECK_DOWN;
}

bool kt_sched_usable(const struct kt_pool *p, u32 i,
		     const struct kt_sched_in *in, unsigned long now)
{
	u32 k;

	if (!kt_srv_available(&p->servers[i], now))
		return false;
	for (k = 0; k < in->ntried; k++)
		if (in->tried[k] == i)
			return false;
	return true;
}

static int kt_sched_rr(struct kt_pool *p, const struct kt_sched_in *in,
		       unsigned long now)
{
	u32 start = (u32)atomic_inc_return(&p->rr);
	u32 k;

	for (k = 0; k < p->nservers; k++) {
		u32 i = (start + k) % p->nservers;

		if (kt_sched_usable(p, i, in, now))
			return i;
	}
	return -1;
}

/* Compare the loads of a and b: active (lc) or active / weight (wlc). */
static int kt_load_cmp(const struct kt_server *a, const struct kt_server *b,
		       bool weighted)
{
	u64 la = atomic_read(&a->st->active);
	u64 lb = atomic_read(&b->st->active);

	if (weighted) {
		la *= READ_ONCE(b->weight);
		lb *= READ_ONCE(a->weight);
	}
	return la < lb ? -1 : la > lb;
}

/*
 * Smooth weighted round robin over the available servers -- all of them,
 * or (@tie not NULL) only those whose load equals @tie's.
 */
static int kt_swrr_locked(struct kt_pool *p, const struct kt_sched_in *in,
			  unsigned long now, const struct kt_server *tie,
			  bool weighted)
{
	int best = -1;
	int total = 0;
	u32 i;

	lockdep_assert_held(&p->lock);
	for (i = 0; i < p->nservers; i++) {
		struct kt_server *s = &p->servers[i];
		int w = READ_ONCE(s->weight);

		if (!kt_sched_usable(p, i, in, now) ||
		    (tie && kt_load_cmp(s, tie, weighted)))
			continue;
		s->wrr_current += w;
		total += w;
		if (best < 0 || s->wrr_current > p->servers[best].wrr_current)
			best = i;
	}
	if (best >= 0)
		p->servers[best].wrr_current -= total;
	return best;
}

static int kt_swrr(struct kt_pool *p, const struct kt_sched_in *in,
		   unsigned long now, const struct kt_server *tie, bool weighted)
{
	int best;

	spin_lock_bh(&p->lock);
	best = kt_swrr_locked(p, in, now, tie, weighted);
	spin_unlock_bh(&p->lock);
	return best;
}

/* The first of the least loaded available servers, or -1. */
static int kt_least(struct kt_pool *p, const struct kt_sched_in *in,
		    unsigned long now, bool weighted)
{
	int least = -1;
	u32 i;

	for (i = 0; i < p->nservers; i++) {
		if (!kt_sched_usable(p, i, in, now))
			continue;
		if (least < 0 ||
		    kt_load_cmp(&p->servers[i], &p->servers[least], weighted) < 0)
			least = i;
	}
	return least;
}

/*
 * Least connections: the servers with the least load; ties (frequent when
 * requests come one at a time) are broken by smooth weighted round robin
 * among the tied servers, as nginx's least_conn does, instead of always
 * taking the first.
 */
static int kt_sched_lc(struct kt_pool *p, const struct kt_sched_in *in,
		       unsigned long now, bool weighted)
{
	int least = kt_least(p, in, now, weighted), best;

	if (least < 0)
		return -1;
	best = kt_swrr(p, in, now, &p->servers[least], weighted);
	return best >= 0 ? best : least;
}

/*
 * Rendezvous (highest random weight) hashing of @key over the available
 * servers -- all of them, or (@tie not NULL) only those whose wlc load
 * equals @tie's.  -1 when none qualifies.
 */
static int kt_rendezvous(struct kt_pool *p, const struct kt_sched_in *in,
			 unsigned long now, u32 key, const struct kt_server *tie)
{
	u32 best_score = 0;
	int best = -1;
	u32 i;

	for (i = 0; i < p->nservers; i++) {
		const struct kt_server *s = &p->servers[i];
		u32 score;

		if (!kt_sched_usable(p, i, in, now) ||
		    (tie && kt_load_cmp(s, tie, true)))
			continue;
		score = jhash_2words(s->key, key, 0);
		if (best < 0 || score > best_score) {
			best = i;
			best_score = score;
		}
	}
	return best;
}

/* LVS is_overloaded(): over its weight while some server has < half. */
static bool kt_overloaded(struct kt_pool *p, u32 i, unsigned long now)
{
	const struct kt_server *s = &p->servers[i];
	u32 k;

	if (atomic_read(&s->st->active) <= READ_ONCE(s->weight))
		return false;
	for (k = 0; k < p->nservers; k++) {
		const struct kt_server *o = &p->servers[k];

		if (kt_srv_available(o, now) &&
		    atomic_read(&o->st->active) * 2 < READ_ONCE(o->weight))
			return true;
	}
	return false;
}

/* Index in e->srv[] of the most loaded member of the set. */
static u32 kt_lblc_worst(const struct kt_pool *p, const struct kt_lblc_entry *e)
{
	u32 worst = 0, k;

	for (k = 1; k < e->n; k++)
		if (kt_load_cmp(&p->servers[e->srv[worst]],
				&p->servers[e->srv[k]], true) < 0)
			worst = k;
	return worst;
}

/*
 * The entry of the key @hash in its set, or a fresh one in place of the
 * least recently used key of the set.  Under the pool lock.
 */
static struct kt_lblc_entry *kt_lblc_find(struct kt_pool *p, u32 hash,
					   unsigned long now)
{
	struct kt_lblc_entry *set, *e = NULL;
	u32 key = hash | 1;	/* 0 marks an empty entry */
	u32 w;

	set = &p->lblc[(hash & (p->nsets - 1)) * KT_LBLC_WAYS];

	lockdep_assert_held(&p->lock);
	for (w = 0; w < KT_LBLC_WAYS; w++) {
		if (set[w].key == key)
			return &set[w];
		if (!e || (e->key && (!set[w].key ||
				      time_before(set[w].last, e->last))))
			e = &set[w];
	}
	e->key = key;
	e->n = 0;
	e->grown = now;
	return e;
}

/*
 * The wlc choice for the key: the least loaded (active / weight) available
 * servers, ties broken by rendezvous hashing of the key.
 */
static int kt_lblc_wlc(struct kt_pool *p, const struct kt_sched_in *in,
		       unsigned long now)
{
	int least = kt_least(p, in, now, true), pick;

	if (least < 0)
		return -1;
	pick = kt_rendezvous(p, in, now, in->dest_hash, &p->servers[least]);
	return pick >= 0 ? pick : least;	/* loads changed meanwhile */
}

static int kt_sched_lblc(struct kt_pool *p, const struct kt_sched_in *in,
			 unsigned long now, bool replicated)
{
	struct kt_lblc_entry *e;
	int best = -1;
	u32 k;

	spin_lock_bh(&p->lock);
	e = kt_lblc_find(p, in->dest_hash, now);
	/* Drop members that became unusable. */
	for (k = 0; k < e->n;) {
		if (e->srv[k] >= p->nservers ||
		    !kt_srv_available(&p->servers[e->srv[k]], now)) {
			e->srv[k] = e->srv[--e->n];
			continue;
		}
		k++;
	}
	for (k = 0; k < e->n; k++) {
		u32 i = e->srv[k];

		if (!kt_sched_usable(p, i, in, now))
			continue;
		if (best < 0 || kt_load_cmp(&p->servers[i], &p->servers[best], true) < 0)
			best = i;
	}
	if (best < 0 || kt_overloaded(p, best, now)) {
		int pick = kt_lblc_wlc(p, in, now);

		if (pick >= 0) {
			if (!replicated) {
				e->n = 0;
			} else if (e->n == KT_LBLCR_SET) {
				/* full: replace the most loaded member */
				u32 worst = kt_lblc_worst(p, e);

				e->srv[worst] = e->srv[--e->n];
			}
			for (k = 0; k < e->n && e->srv[k] != pick; k++)
				;
			if (k == e->n)
				e->srv[e->n++] = pick;
			e->grown = now;
			best = pick;
		}
	} else if (replicated && e->n > 1 &&
		   time_after(now, e->grown + KT_LBLCR_TRIM)) {
		/* The set has been stable for long: drop its most loaded. */
		u32 worst = kt_lblc_worst(p, e);

		if (e->srv[worst] != best)
			e->srv[worst] = e->srv[--e->n];
		e->grown = now;
	}
	e->last = now;
	spin_unlock_bh(&p->lock);
	return best;
}

/* Does @p's scheduler use the request's host and path (dest_hash)? */
bool kt_sched_uses_dest(const struct kt_pool *p)
{
	return p->sched == KT_SCHED_DH || p->sched == KT_SCHED_LBLC ||
	       p->sched == KT_SCHED_LBLCR;
}

/* The pool's scheduler's choice; -1 when no server is usable. */
static int kt_sched_pick(struct kt_pool *p, const struct kt_sched_in *in,
			 unsigned long now)
{
	switch (p->sched) {
	case KT_SCHED_WRR:
		return kt_swrr(p, in, now, NULL, false);
	case KT_SCHED_LC:
		return kt_sched_lc(p, in, now, false);
	case KT_SCHED_WLC:
		return kt_sched_lc(p, in, now, true);
	case KT_SCHED_DH:
		return kt_rendezvous(p, in, now, in->dest_hash, NULL);
	case KT_SCHED_SH:
		return kt_rendezvous(p, in, now, in->client_hash, NULL);
	case KT_SCHED_LBLC:
		return kt_sched_lblc(p, in, now, false);
	case KT_SCHED_LBLCR:
		return kt_sched_lblc(p, in, now, true);
	case KT_SCHED_RR:
	default:
		return kt_sched_rr(p, in, now);
	}
}

/*
 * Pick a server of @p for a request; -1 when none is available.  The
 * server persistence prefers, if it is usable; else the scheduler's choice
 * (which persistence then remembers).  Context: process or softirq; takes
 * the pool's lock for wrr, lc ties, lblc, lblcr and the source table.
 */
int kt_schedule(struct kt_pool *p, const struct kt_sched_in *in)
{
	unsigned long now = jiffies;
	int i;

	if (!p->nservers)
		return -1;
	if (p->persist.kind != KT_PERSIST_NONE) {
		i = kt_persist_pick(p, in, now);
		if (i >= 0)
			return i;
	}
	i = kt_sched_pick(p, in, now);
	if (i >= 0 && p->persist.kind == KT_PERSIST_SOURCE)
		kt_persist_note(p, in, i, now);
	return i;
}

/* Passive failure marking: KT_MAX_FAILS within KT_FAIL_WINDOW: cool down. */
#define KT_MAX_FAILS	3
#define KT_FAIL_WINDOW	(10 * HZ)
#define KT_FAIL_COOL	(10 * HZ)

void kt_server_failed(struct kt_server *s)
{
	unsigned long now = jiffies;

	if (time_after(now, READ_ONCE(s->fail_start) + KT_FAIL_WINDOW)) {
		WRITE_ONCE(s->fail_start, now);
		atomic_set(&s->fails, 0);
	}
	if (atomic_inc_return(&s->fails) >= KT_MAX_FAILS) {
		WRITE_ONCE(s->down_until, now + KT_FAIL_COOL);
		atomic_set(&s->fails, 0);
	}
}

void kt_server_ok(struct kt_server *s)
{
	if (atomic_read(&s->fails))
		atomic_set(&s->fails, 0);
}

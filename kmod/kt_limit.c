// SPDX-License-Identifier: GPL-2.0
/*
 * kt_limit.c - a new connection's admission (kt_conn_admit: its service's
 * connection limit, then its source's) and the per-source limits:
 * concurrent connections and requests per second of one client address to
 * one service (the L7 form of LVS's DoS defences).  Over a limit the client
 * gets 503 (the service's) or 429 (the source's) and the connection closes;
 * nothing is queued.
 *
 * One table per namespace, created by the first configuration that asks
 * for a per-source limit and kept until the namespace goes.  An entry
 * lives while it has connections and for KT_SRC_IDLE after its last use
 * (its rate bucket refills within a second), then the collector frees it.
 * The table holds at most KT_SRC_MAX entries: past that, new addresses are
 * not tracked (the namespace's connection limit still bounds them) and the
 * service counts nothing against them -- failing open, so that a flood of
 * spoofed-looking sources cannot lock out everyone else.
 *
 * Context: process (the accept work and connections' work); the table's
 * spinlock is a leaf of level 5 (kt.h).
 */

#include <linux/jhash.h>
#include <linux/slab.h>
#include <linux/workqueue.h>

#include "kt_conn.h"

#define KT_SRC_BUCKETS	1024
#define KT_SRC_MAX	65536
#define KT_SRC_GC	(5 * HZ)
#define KT_SRC_IDLE	(2 * HZ)

/* A client address and the service's listen address, zero-padded. */
struct kt_src_key {
	u8 family, lfamily;
	__be16 lport;
	u8 addr[16];
	u8 laddr[16];
};

struct kt_src {
	struct hlist_node node;		/* under the table's lock, as the rest */
	struct kt_src_key key;
	u32 conns;
	u32 tokens;			/* requests left, in 1/HZ units */
	unsigned long stamp;		/* last refill */
	unsigned long last;		/* last use */
};

struct kt_srctab {
	spinlock_t lock;
	u32 n;
	struct delayed_work gc;
	struct hlist_head b[KT_SRC_BUCKETS];
};

static void kt_src_addr(const union kt_addr *ss, u8 *family,
			u8 *addr, __be16 *port)
{
	if (ss->sa.sa_family == AF_INET) {
		const struct sockaddr_in *sin = &ss->in;

		*family = 4;
		memcpy(addr, &sin->sin_addr, 4);
		*port = sin->sin_port;
	} else {
		const struct sockaddr_in6 *sin6 = &ss->in6;

		*family = 6;
		memcpy(addr, &sin6->sin6_addr, 16);
		*port = sin6->sin6_port;
	}
}

static void kt_src_key(struct kt_src_key *k, const union kt_addr *peer,
		       const union kt_addr *laddr)
{
	__be16 port;

	memset(k, 0, sizeof(*k));
	kt_src_addr(peer, &k->family, k->addr, &port);
	kt_src_addr(laddr, &k->lfamily, k->laddr, &k->lport);
}

static struct kt_src *kt_src_find(struct kt_srctab *t, u32 hash,
				  const struct kt_src_key *k)
{
	struct kt_src *e;

	hlist_for_each_entry(e, &t->b[hash % KT_SRC_BUCKETS], node)
		if (!memcmp(&e->key, k, sizeof(*k)))
			return e;
	return NULL;
}

/*
 * Count a new connection from @peer to @svc.  0 with *@out the entry (or
 * NULL: not tracked), or -EBUSY when the address is at its limit.
 */
int kt_src_attach(struct kt_net *ktn, const struct kt_service *svc,
		  const union kt_addr *peer, struct kt_src **out)
{
	struct kt_srctab *t = smp_load_acquire(&ktn->srctab);
	struct kt_src *e, *fresh = NULL;
	struct kt_src_key k;
	u32 hash;
	int err = 0;

	*out = NULL;
	if (!t)
		return 0;
	kt_src_key(&k, peer, &svc->addr);
	hash = jhash(&k, sizeof(k), 0);
	for (;;) {
		spin_lock_bh(&t->lock);
		e = kt_src_find(t, hash, &k);
		if (e || fresh || t->n >= KT_SRC_MAX)
			break;
		spin_unlock_bh(&t->lock);
		fresh = kzalloc(sizeof(*fresh), KT_GFP);
		if (!fresh)
			return 0;
	}
	if (!e && fresh && t->n < KT_SRC_MAX) {
		e = fresh;
		fresh = NULL;
		e->key = k;
		e->tokens = svc->src_rate * HZ;
		e->stamp = jiffies;
		hlist_add_head(&e->node, &t->b[hash % KT_SRC_BUCKETS]);
		t->n++;
		kt_alloc_inc();
		queue_delayed_work(kt_wq, &t->gc, KT_SRC_GC);
	}
	if (e) {
		if (svc->src_conns && e->conns >= svc->src_conns) {
			err = -EBUSY;
		} else {
			e->conns++;
			e->last = jiffies;
			*out = e;
		}
	}
	spin_unlock_bh(&t->lock);
	kfree(fresh);
	return err;
}

/*
 * A new client connection from @peer to @svc (accepted, or handed over by
 * the TLS daemon): the service's connection limit, then the source's.  0
 * with *@src the entry it is counted in (or NULL), or the status of the
 * refusal (503, 429), its error counted.
 */
int kt_conn_admit(struct kt_net *ktn, struct kt_service *svc,
		  const union kt_addr *peer, struct kt_src **src)
{
	*src = NULL;
	if (svc->max_conns &&
	    (u32)atomic_read(&svc->st->active) >= svc->max_conns) {
		kt_stat_inc(svc->st, errors[KT_E_LIMIT]);
		return 503;
	}
	if ((svc->src_conns || svc->src_rate) &&
	    kt_src_attach(ktn, svc, peer, src) == -EBUSY) {
		kt_stat_inc(svc->st, errors[KT_E_SOURCE_LIMIT]);
		return 429;
	}
	return 0;
}

/* A connection counted by kt_src_attach() ends. */
void kt_src_detach(struct kt_net *ktn, struct kt_src *e)
{
	struct kt_srctab *t = ktn->srctab;

	spin_lock_bh(&t->lock);
	e->conns--;
	e->last = jiffies;
	spin_unlock_bh(&t->lock);
}

/*
 * A request from @e's address: true if its rate allows it (a token bucket
 * of svc->src_rate requests, refilled at that rate per second).
 */
bool kt_src_request(struct kt_net *ktn, struct kt_src *e,
		    const struct kt_service *svc)
{
	struct kt_srctab *t = ktn->srctab;
	unsigned long now = jiffies;
	u64 tokens, cap = (u64)svc->src_rate * HZ;
	bool ok;

	spin_lock_bh(&t->lock);
	tokens = e->tokens + (u64)min_t(unsigned long, now - e->stamp, HZ) *
			     svc->src_rate;
	tokens = min(tokens, cap);
	e->stamp = now;
	e->last = now;
	ok = tokens >= HZ;
	if (ok)
		tokens -= HZ;
	e->tokens = tokens;
	spin_unlock_bh(&t->lock);
	return ok;
}

/* Free the entries nobody used lately, a bucket at a time. */
static void kt_srctab_gc(struct work_struct *w)
{
	struct kt_srctab *t = container_of(to_delayed_work(w), struct kt_srctab,
					   gc);
	struct hlist_node *tmp;
	struct kt_src *e;
	u32 i, left;

	for (i = 0; i < KT_SRC_BUCKETS; i++) {
		spin_lock_bh(&t->lock);
		hlist_for_each_entry_safe(e, tmp, &t->b[i], node) {
			if (e->conns || time_before(jiffies, e->last + KT_SRC_IDLE))
				continue;
			hlist_del(&e->node);
			t->n--;
			kfree(e);
			kt_alloc_dec();
		}
		spin_unlock_bh(&t->lock);
		cond_resched();
	}
	spin_lock_bh(&t->lock);
	left = t->n;
	spin_unlock_bh(&t->lock);
	if (left)
		queue_delayed_work(kt_wq, &t->gc, KT_SRC_GC);
}

/* Context: process, under ktn->lock. */
int kt_srctab_init(struct kt_net *ktn)
{
	struct kt_srctab *t;
	u32 i;

	if (ktn->srctab)
		return 0;
	t = kvzalloc(sizeof(*t), KT_GFP);
	if (!t)
		return -ENOMEM;
	spin_lock_init(&t->lock);
	INIT_DELAYED_WORK(&t->gc, kt_srctab_gc);
	for (i = 0; i < KT_SRC_BUCKETS; i++)
		INIT_HLIST_HEAD(&t->b[i]);
	kt_alloc_inc();
	smp_store_release(&ktn->srctab, t);
	return 0;
}

/* The namespace is gone, and every connection with it. */
void kt_srctab_exit(struct kt_net *ktn)
{
	struct kt_srctab *t = ktn->srctab;
	struct hlist_node *tmp;
	struct kt_src *e;
	u32 i;

	if (!t)
		return;
	cancel_delayed_work_sync(&t->gc);
	for (i = 0; i < KT_SRC_BUCKETS; i++)
		hlist_for_each_entry_safe(e, tmp, &t->b[i], node) {
			WARN_ON_ONCE(e->conns);
			kfree(e);
			kt_alloc_dec();
		}
	kvfree(t);
	kt_alloc_dec();
	ktn->srctab = NULL;
}

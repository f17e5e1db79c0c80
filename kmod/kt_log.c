// SPDX-License-Identifier: GPL-2.0
/*
 * kt_log.c - the access log's way out of the kernel: the data path hands
 * over one record per exchange (kt_log_submit), records leave in batches to
 * the namespace's "log" multicast group, and the namespace keeps its most
 * recent ones in a bounded ring that KTCPVS_CMD_GET_LOG reads.
 *
 * A batch is one generic netlink message, KTCPVS_CMD_LOG, being filled: an
 * skb of KT_LOG_BATCH bytes holding a KTCPVS_A_LOG_RECORDS attribute to
 * which records are appended back to back (struct ktcpvs_log_rec, its
 * strings, padding to 8 bytes).  A batch leaves when the next record does
 * not fit (it goes to the ready list and the flush work is queued at once)
 * or when it is KT_LOG_AGE old (the flush work, armed when the batch took
 * its first record).  The flush work closes each batch with
 * KTCPVS_A_LOG_DROPPED, copies its records into the ring, and sends it.
 *
 * Nothing waits on the data path's side: kt_log_submit() copies a record
 * into the batch under a spinlock, allocating a new batch with GFP_NOWAIT
 * when needed.  When no batch can be had, when KT_LOG_READY_MAX full
 * batches already wait for the flush work, when the data path has no
 * record buffer for a connection (kt_access.c), or when a listener's
 * socket had no room for a batch, the records are counted as dropped: per
 * namespace, in every batch and in KTCPVS_CMD_GET_INFO.  netlink tells the
 * sender about a listener without room (ENOBUFS) only when that listener
 * asked for it with NETLINK_BROADCAST_ERROR, as l7ctl does; any listener
 * learns of its own losses from ENOBUFS on its next read.
 *
 * The ring holds the last KTCPVS_LOG_RING records in at most
 * KT_LOG_RING_BYTES of record bytes (records are variable-length: the older
 * ones go when either bound is reached).  It exists while the running
 * configuration has a service that logs: allocated by the commit that
 * brings the first such configuration (charged to whoever applied it; the
 * commit fails with ENOMEM without it), freed by the commit or flush that
 * leaves none, and at the namespace's exit.  It is written only under
 * log->mutex (the flush, which also orders the batches).
 *
 * Contexts: kt_log_submit() and kt_log_active() from process context or
 * softirq; everything else in process context.  Locks (kt.h): log->mutex,
 * then kt_mc_sem (read, inside kt_multicast()); log->lock is a level-5
 * spinlock (BH) under which only the batch is filled, a batch allocated
 * (GFP_ATOMIC) and the flush work queued.
 */

#include <linux/sched/mm.h>
#include <linux/skbuff.h>
#include <net/genetlink.h>
#include <net/netlink.h>

#include "uapi/ktcpvs.h"
#include "kt.h"

/*
 * One batch: a KTCPVS_CMD_LOG message of at most this many bytes, so that
 * the skb's data and its shared info take one 8 KiB kmalloc (order 1, to
 * be had without waiting more often than order 2 or 3).  About 40 records
 * of a typical size (docs/datapath.md, "The access log").
 */
#define KT_LOG_BATCH		SKB_WITH_OVERHEAD(8192U)
#define KT_LOG_AGE		msecs_to_jiffies(250)
#define KT_LOG_READY_MAX	8	/* full batches waiting for the flush */
#define KT_LOG_RING_BYTES	(256U << 10)
#define KT_LOG_NAME_MAX		255	/* service, pool, host */
#define KT_LOG_METHOD_MAX	32	/* an extension method's name */
static_assert(KT_LOG_NAME_MAX >= KT_HTTP_HOST_MAX);
/* room kept at the end of a message for KTCPVS_A_LOG_DROPPED (and a pad) */
#define KT_LOG_TAIL		(2 * NLA_HDRLEN + sizeof(u64))
#define KT_LOG_REC_MAX		ALIGN(sizeof(struct ktcpvs_log_rec) + \
				      3 * KT_LOG_NAME_MAX + \
				      KTCPVS_LOG_PATH_MAX + KT_LOG_METHOD_MAX, 8)

static_assert(KT_LOG_BATCH <= U16_MAX - NLMSG_HDRLEN - GENL_HDRLEN);
static_assert(KT_LOG_REC_MAX + KT_LOG_TAIL + NLMSG_HDRLEN + GENL_HDRLEN +
	      NLA_HDRLEN <= KT_LOG_BATCH);
static_assert(sizeof(struct ktcpvs_log_rec) % 8 == 0);

/* What a batch's skb carries beside its bytes, while it is ours. */
struct kt_log_cb {
	struct nlattr *recs;	/* KTCPVS_A_LOG_RECORDS, open */
	u32 nrecs;
};

static inline struct kt_log_cb *kt_log_cb(struct sk_buff *skb)
{
	BUILD_BUG_ON(sizeof(struct kt_log_cb) > sizeof_field(struct sk_buff, cb));
	return (struct kt_log_cb *)skb->cb;
}

struct kt_log_ent {
	u32 off, len;		/* in data[] */
};

struct kt_log_ring {
	u64 first;		/* sequence number of the oldest record */
	u32 head;		/* ent[] index of the oldest record */
	u32 count;
	u32 wpos;		/* where the next record goes in data[] */
	struct kt_log_ent ent[KTCPVS_LOG_RING];
	u8 data[KT_LOG_RING_BYTES];
};

/* Bytes of a record with its strings and padding, from its lengths. */
static u32 kt_log_rec_len(const struct ktcpvs_log_rec *r)
{
	return ALIGN(sizeof(*r) + r->service_len + r->pool_len + r->host_len +
		     r->path_len + r->method_len, 8);
}

/* ---- the data path's side ------------------------------------------------ */

/*
 * Is anybody going to read records of @ktn?  Either the namespace keeps a
 * ring (its configuration logs), or some socket listens on the "log"
 * group.  netlink keeps one listener map for all namespaces, so the second
 * may be true because of a listener elsewhere: the records are then built
 * and go to the ring only.  Context: any.
 */
bool kt_log_active(struct kt_net *ktn)
{
	return READ_ONCE(ktn->log.keep) || kt_log_listened(ktn->net);
}

/* A new, empty batch for @log; false when none can be had.  Under log->lock. */
static bool kt_log_new_batch(struct kt_log *log)
{
	struct sk_buff *skb;
	struct nlattr *recs;

	skb = alloc_skb(KT_LOG_BATCH, GFP_NOWAIT | __GFP_NOWARN);
	if (!skb)
		return false;
	recs = NULL;
	if (kt_genl_put(skb, 0, 0, 0, KTCPVS_CMD_LOG))
		recs = nla_nest_start_noflag(skb, KTCPVS_A_LOG_RECORDS);
	if (WARN_ON_ONCE(!recs)) {
		kfree_skb(skb);
		return false;
	}
	kt_alloc_inc();
	kt_log_cb(skb)->recs = recs;
	kt_log_cb(skb)->nrecs = 0;
	log->batch = skb;
	log->started = jiffies;
	return true;
}

/* The filling batch is full: it goes to the ready list.  Under log->lock. */
static void kt_log_close_batch(struct kt_log *log)
{
	struct sk_buff *skb = log->batch;

	log->batch = NULL;
	if (skb_queue_len(&log->ready) >= KT_LOG_READY_MAX) {
		/* the flush work is behind: this batch is lost */
		atomic64_add(kt_log_cb(skb)->nrecs, &log->dropped);
		kfree_skb(skb);
		kt_alloc_dec();
		return;
	}
	__skb_queue_tail(&log->ready, skb);
	mod_delayed_work(kt_wq, &log->flush, 0);
}

static u8 *kt_log_put_str(u8 *p, const struct kt_match_slice *s, u32 len)
{
	if (len)
		memcpy(p, s->ptr, len);
	return p + len;
}

/*
 * One access log record of @ktn: @rec with the strings @s (each bounded
 * again here: names and host to 255 bytes, the path to
 * KTCPVS_LOG_PATH_MAX, an extension method's name to 32).  The lengths and
 * padding fields of @rec are ignored; everything else is copied as it is.
 * Never waits: a record that finds no room is counted as dropped.
 * Context: process or softirq; takes log->lock, a level-5 spinlock (BH):
 * not to be called under another level-5 lock.
 */
void kt_log_submit(struct kt_net *ktn, const struct ktcpvs_log_rec *rec,
		   const struct kt_log_strings *s)
{
	struct kt_log *log = &ktn->log;
	u32 sl = min_t(u32, s->service.len, KT_LOG_NAME_MAX);
	u32 pl = min_t(u32, s->pool.len, KT_LOG_NAME_MAX);
	u32 hl = min_t(u32, s->host.len, KT_LOG_NAME_MAX);
	u32 xl = min_t(u32, s->path.len, KTCPVS_LOG_PATH_MAX);
	u32 ml = min_t(u32, s->method.len, KT_LOG_METHOD_MAX);
	u32 len = ALIGN(sizeof(*rec) + sl + pl + hl + xl + ml, 8);
	struct ktcpvs_log_rec *r;
	bool first;
	u8 *p;

	spin_lock_bh(&log->lock);
	if (unlikely(log->dead))
		goto out;
	if (log->batch && log->batch->len + len + KT_LOG_TAIL > KT_LOG_BATCH)
		kt_log_close_batch(log);
	if (!log->batch && !kt_log_new_batch(log)) {
		atomic64_inc(&log->dropped);
		goto out;
	}
	first = !kt_log_cb(log->batch)->nrecs;
	p = skb_put(log->batch, len);
	r = (struct ktcpvs_log_rec *)p;
	*r = *rec;
	r->pad = 0;
	memset(r->pad2, 0, sizeof(r->pad2));
	r->service_len = sl;
	r->pool_len = pl;
	r->host_len = hl;
	r->path_len = xl;
	r->method_len = ml;
	p += sizeof(*r);
	p = kt_log_put_str(p, &s->service, sl);
	p = kt_log_put_str(p, &s->pool, pl);
	p = kt_log_put_str(p, &s->host, hl);
	p = kt_log_put_str(p, &s->path, xl);
	p = kt_log_put_str(p, &s->method, ml);
	memset(p, 0, (u8 *)r + len - p);
	kt_log_cb(log->batch)->nrecs++;
	if (first)	/* the batch leaves when full or KT_LOG_AGE old */
		queue_delayed_work(kt_wq, &log->flush, KT_LOG_AGE);
out:
	spin_unlock_bh(&log->lock);
}

/* ---- the ring ----------------------------------------------------------------- */

static void kt_ring_drop_oldest(struct kt_log_ring *r)
{
	r->head = (r->head + 1) % KTCPVS_LOG_RING;
	r->count--;
	r->first++;
}

static bool kt_ring_oldest_overlaps(const struct kt_log_ring *r, u32 off,
				    u32 len)
{
	const struct kt_log_ent *e = &r->ent[r->head];

	return e->off < off + len && off < e->off + e->len;
}

/*
 * Append one record.  Records lie in data[] in the order they came, from 0
 * on, starting again at 0 when the next one does not fit before the end; so
 * the records at or after the write position are the oldest, and the ones
 * a new record overwrites are always the oldest ones.  Under log->mutex.
 */
static void kt_ring_add(struct kt_log_ring *r, const void *rec, u32 len)
{
	u32 w = r->wpos, i;

	if (WARN_ON_ONCE(len > KT_LOG_RING_BYTES))
		return;
	if (w + len > KT_LOG_RING_BYTES) {
		/* those past w are older than those before it: they go first */
		while (r->count && r->ent[r->head].off >= w)
			kt_ring_drop_oldest(r);
		w = 0;
	}
	while (r->count && (r->count == KTCPVS_LOG_RING ||
			    kt_ring_oldest_overlaps(r, w, len)))
		kt_ring_drop_oldest(r);
	i = (r->head + r->count) % KTCPVS_LOG_RING;
	r->ent[i].off = w;
	r->ent[i].len = len;
	r->count++;
	memcpy(r->data + w, rec, len);
	r->wpos = w + len;
}

/*
 * Copy the records of a batch's KTCPVS_A_LOG_RECORDS into the ring, if
 * there is one.  Under log->mutex.
 */
static void kt_log_keep(struct kt_net *ktn, const struct nlattr *recs)
{
	struct kt_log_ring *r = ktn->log.ring;
	const u8 *p = nla_data(recs);
	int rem = nla_len(recs);

	while (r && rem >= (int)sizeof(struct ktcpvs_log_rec)) {
		u32 len = kt_log_rec_len((const struct ktcpvs_log_rec *)p);

		if (WARN_ON_ONCE(len > rem))
			break;
		kt_ring_add(r, p, len);
		p += len;
		rem -= len;
	}
}

/* ---- sending ------------------------------------------------------------------- */

/*
 * Close @skb (a batch), keep its records in the ring and send it to the
 * namespace's "log" group.  Consumes @skb.  Under log->mutex.
 */
static void kt_log_send(struct kt_net *ktn, struct sk_buff *skb)
{
	struct kt_log *log = &ktn->log;
	struct kt_log_cb cb = *kt_log_cb(skb);
	int err;

	lockdep_assert_held(&log->mutex);
	nla_nest_end(skb, cb.recs);
	kt_log_keep(ktn, cb.recs);
	/* room for it was kept when records were added */
	err = nla_put_u64_64bit(skb, KTCPVS_A_LOG_DROPPED,
				atomic64_read(&log->dropped), KTCPVS_A_PAD);
	WARN_ON_ONCE(err);
	nlmsg_end(skb, nlmsg_hdr(skb));
	memset(skb->cb, 0, sizeof(skb->cb));	/* netlink's from now on */
	kt_alloc_dec();
	err = kt_multicast(ktn->net, skb, KT_MCGRP_LOG);
	/*
	 * ESRCH: nobody listens in this namespace, or no listener had room
	 * and none asked to be told (the ring has them).  ESHUTDOWN: the
	 * module is going.  Anything else, ENOBUFS above all: a listener
	 * with NETLINK_BROADCAST_ERROR did not get them.
	 */
	if (err && err != -ESRCH && err != -ESHUTDOWN)
		atomic64_add(cb.nrecs, &log->dropped);
}

/*
 * Send the full batches, and the filling one when @all or when it is
 * KT_LOG_AGE old; else the flush comes back when it is.  Batches go out,
 * and into the ring, in the order they were filled.  Process context;
 * takes log->mutex.
 */
static void kt_log_flush(struct kt_net *ktn, bool all)
{
	struct kt_log *log = &ktn->log;
	struct sk_buff_head list;
	struct sk_buff *skb;

	__skb_queue_head_init(&list);
	mutex_lock(&log->mutex);
	spin_lock_bh(&log->lock);
	skb_queue_splice_init(&log->ready, &list);
	if (log->batch) {
		unsigned long due = log->started + KT_LOG_AGE;

		if (all || !time_before(jiffies, due)) {
			__skb_queue_tail(&list, log->batch);
			log->batch = NULL;
		} else if (!log->dead) {
			queue_delayed_work(kt_wq, &log->flush, due - jiffies);
		}
	}
	spin_unlock_bh(&log->lock);
	while ((skb = __skb_dequeue(&list)))
		kt_log_send(ktn, skb);
	mutex_unlock(&log->mutex);
}

static void kt_log_flush_work(struct work_struct *w)
{
	struct kt_log *log = container_of(to_delayed_work(w), struct kt_log,
					  flush);

	kt_log_flush(log->ktn, false);
}

/* ---- KTCPVS_CMD_GET_LOG -------------------------------------------------------- */

/*
 * Dump the ring oldest first, in messages like KTCPVS_CMD_LOG's (command
 * KTCPVS_CMD_GET_LOG): KTCPVS_A_LOG_RECORDS, then KTCPVS_A_LOG_DROPPED.  The
 * first part sends what is pending, so the dump includes every record
 * submitted before it began.  Records that the ring lost while the dump
 * went on are skipped and the dump is marked interrupted.  Context:
 * process, under genl_mutex.
 *
 * cb->args: [0] the next record's sequence number (low 32 bits),
 * [1] the high 32 bits, [2] started, [3] records skipped.
 */
int kt_log_dump(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct kt_net *ktn = kt_net(sock_net(skb->sk));
	struct kt_log *log = &ktn->log;
	struct kt_log_ring *r;
	struct nlattr *recs;
	u64 seq, end;
	u32 sent = 0;
	void *hdr;
	int err = 0;

	if (!cb->args[2]) {
		kt_log_flush(ktn, true);
		cb->args[2] = 1;
	}
	mutex_lock(&log->mutex);
	r = log->ring;
	if (!r)
		goto out;
	seq = (u64)(u32)cb->args[1] << 32 | (u32)cb->args[0];
	if (cb->args[2] == 1) {
		seq = r->first;
		cb->args[2] = 2;
	} else if (seq < r->first) {
		cb->args[3] += r->first - seq;
		seq = r->first;
	}
	cb->seq = 1 + (u32)cb->args[3];
	end = r->first + r->count;
	if (seq >= end)
		goto out;
	hdr = kt_genl_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq,
			  NLM_F_MULTI, KTCPVS_CMD_GET_LOG);
	if (!hdr) {
		err = -EMSGSIZE;
		goto out;
	}
	genl_dump_check_consistent(cb, hdr);
	recs = nla_nest_start_noflag(skb, KTCPVS_A_LOG_RECORDS);
	if (!recs) {
		genlmsg_cancel(skb, hdr);
		err = -EMSGSIZE;
		goto out;
	}
	for (; seq < end; seq++) {
		const struct kt_log_ent *e =
			&r->ent[(r->head + (u32)(seq - r->first)) % KTCPVS_LOG_RING];

		if (skb_tailroom(skb) < (int)(e->len + KT_LOG_TAIL) ||
		    sent + e->len > KT_LOG_BATCH)
			break;
		skb_put_data(skb, r->data + e->off, e->len);
		sent += e->len;
	}
	nla_nest_end(skb, recs);
	if (!sent || nla_put_u64_64bit(skb, KTCPVS_A_LOG_DROPPED,
				       atomic64_read(&log->dropped),
				       KTCPVS_A_PAD)) {
		genlmsg_cancel(skb, hdr);
		err = -EMSGSIZE;	/* not even one record fits a message */
		goto out;
	}
	genlmsg_end(skb, hdr);
	cb->args[0] = (u32)seq;
	cb->args[1] = (u32)(seq >> 32);
out:
	mutex_unlock(&log->mutex);
	return err ? err : skb->len;
}

/* ---- the namespace -------------------------------------------------------------- */

/* Does @cfg (or NULL) have a service that logs? */
static bool kt_config_logs(const struct kt_config *cfg)
{
	u32 i;

	for (i = 0; cfg && i < cfg->nservices; i++)
		if (cfg->svc[i].log_mode != KT_LOG_OFF)
			return true;
	return false;
}

/*
 * Before @cfg (or NULL) is published: when it has a service that logs,
 * the ring must exist.  0 or -ENOMEM (the commit fails, nothing changed).
 * Context: process, under ktn->lock; the allocation is charged to the
 * caller (who applies the configuration).
 */
int kt_log_prepare(struct kt_net *ktn, const struct kt_config *cfg)
{
	struct kt_log *log = &ktn->log;
	struct kt_log_ring *r;
	int err = 0;

	lockdep_assert_held(&ktn->lock);
	if (!kt_config_logs(cfg))
		return 0;
	mutex_lock(&log->mutex);
	if (!log->ring) {
		r = kt_alloc(sizeof(*r));
		if (r)
			log->ring = r;
		else
			err = -ENOMEM;
	}
	mutex_unlock(&log->mutex);
	return err;
}

/*
 * @cfg (or NULL) is being published: keep records when it has a service
 * that logs; else the ring goes.  Context: process, under ktn->lock, after
 * kt_log_prepare() for the same @cfg.
 */
void kt_log_config(struct kt_net *ktn, const struct kt_config *cfg)
{
	struct kt_log *log = &ktn->log;
	bool logs = kt_config_logs(cfg);

	lockdep_assert_held(&ktn->lock);
	WRITE_ONCE(log->keep, logs);
	if (logs)
		return;
	mutex_lock(&log->mutex);
	kt_free(log->ring);
	log->ring = NULL;
	mutex_unlock(&log->mutex);
}

/* A record of @ktn was lost before it reached the log.  Context: any. */
void kt_log_drop(struct kt_net *ktn)
{
	atomic64_inc(&ktn->log.dropped);
}

/* Records dropped in @ktn so far. */
u64 kt_log_dropped(struct kt_net *ktn)
{
	return atomic64_read(&ktn->log.dropped);
}

void kt_log_init(struct kt_net *ktn)
{
	struct kt_log *log = &ktn->log;

	log->ktn = ktn;
	spin_lock_init(&log->lock);
	mutex_init(&log->mutex);
	__skb_queue_head_init(&log->ready);
	INIT_DELAYED_WORK(&log->flush, kt_log_flush_work);
	atomic64_set(&log->dropped, 0);
}

/*
 * Send what every namespace has pending: the module is going, and its
 * family goes first.  Context: process (module exit); takes net_rwsem.
 */
void kt_log_flush_all(void)
{
	struct net *net;

	down_read(&net_rwsem);
	for_each_net(net)
		kt_log_flush(kt_net(net), true);
	up_read(&net_rwsem);
}

/*
 * The namespace is going (its connections are gone, so nothing submits
 * any more): no record is taken after this, the flush work is stopped, and
 * what is left is freed -- an exiting namespace has no user socket left to
 * send to.  Context: process (pernet exit).
 */
void kt_log_exit(struct kt_net *ktn)
{
	struct kt_log *log = &ktn->log;
	struct sk_buff *skb;

	spin_lock_bh(&log->lock);
	log->dead = true;
	spin_unlock_bh(&log->lock);
	cancel_delayed_work_sync(&log->flush);	/* it may re-arm itself: waits */
	if (log->batch)
		__skb_queue_tail(&log->ready, log->batch);
	log->batch = NULL;
	while ((skb = __skb_dequeue(&log->ready))) {
		kfree_skb(skb);
		kt_alloc_dec();
	}
	kt_free(log->ring);
	log->ring = NULL;
	mutex_destroy(&log->mutex);
}

// SPDX-License-Identifier: GPL-2.0
/*
 * kt_config.c - configurations: build from a validated blob, swap, free.
 *
 * A commit builds the whole new configuration aside, opens the listeners
 * it needs that are not open yet, and only then publishes it with
 * rcu_replace_pointer() under ktn->lock.  Any failure before the swap
 * undoes what it opened and leaves the running configuration untouched.
 * After the swap, listeners no longer wanted are closed and the
 * connections that reached them are asked to close; the old configuration
 * is freed when its last user lets go (percpu_ref).
 *
 * What a configuration may make the kernel allocate is bounded: the
 * validator bounds the counts of services, pools and servers; lblc tables
 * exist only for lblc/lblcr pools with servers and are sized by them; the
 * whole is estimated before anything is allocated and refused above
 * KT_CONFIG_MEM_MAX.  Everything is charged to the memory cgroup of the
 * process that applies it, as are the connections it accepts later.
 * Lookups by name and address are hashed, and long loops reschedule, so a
 * large configuration costs linear time.
 */

#include <linux/jhash.h>
#include <linux/log2.h>
#include <linux/memcontrol.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <net/ipv6.h>

#include "kt_conn.h"

#define KT_DEF_T_HEADER		(10 * HZ)
#define KT_DEF_T_IDLE		(60 * HZ)
#define KT_DEF_T_CONNECT	(5 * HZ)
#define KT_DEF_T_BACKEND	(60 * HZ)
#define KT_DEF_BACKLOG		1024
#define KT_CONFIG_MEM_MAX	(256UL << 20)	/* runtime objects of one config */
/*
 * The default namespace-wide connection limit assumes the worst a client
 * can make a connection hold -- its head buffer at the largest head limit
 * of the configuration, plus this for everything else -- and lets that
 * take at most half of the memory.
 */
#define KT_CONN_OVERHEAD	(8U << 10)
#define KT_MIN_DEF_CONNS	256

/* ---- addresses -------------------------------------------------------------- */

int kt_sockaddr(union kt_addr *ss, u8 family, const u8 *addr,
		u16 port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == KT_MATCH_AF_INET) {
		struct sockaddr_in *sin = &ss->in;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr, 4);
		return sizeof(*sin);
	}
	if (family == KT_MATCH_AF_INET6) {
		struct sockaddr_in6 *sin6 = &ss->in6;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, addr, 16);
		return sizeof(*sin6);
	}
	return -EINVAL;
}

bool kt_addr_equal(const union kt_addr *a, const union kt_addr *b)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return false;
	if (a->sa.sa_family == AF_INET) {
		const struct sockaddr_in *x = &a->in, *y = &b->in;

		return x->sin_port == y->sin_port &&
		       x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa.sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = &a->in6, *y = &b->in6;

		return x->sin6_port == y->sin6_port &&
		       ipv6_addr_equal(&x->sin6_addr, &y->sin6_addr);
	}
	return false;
}

u32 kt_addr_hash(const union kt_addr *a)
{
	if (a->sa.sa_family == AF_INET) {
		const struct sockaddr_in *x = &a->in;

		return jhash_2words((__force u32)x->sin_addr.s_addr,
				    (__force u32)x->sin_port, AF_INET);
	}
	if (a->sa.sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = &a->in6;

		return jhash(&x->sin6_addr, 16, (__force u32)x->sin6_port);
	}
	return 0;
}

/* @a's family (KT_MATCH_AF_*) and address bytes (IPv4 in the first 4). */
void kt_addr_bytes(const union kt_addr *a, u8 *family, u8 addr[16])
{
	memset(addr, 0, 16);
	if (a->sa.sa_family == AF_INET) {
		*family = KT_MATCH_AF_INET;
		memcpy(addr, &a->in.sin_addr, 4);
	} else {
		*family = KT_MATCH_AF_INET6;
		memcpy(addr, &a->in6.sin6_addr, 16);
	}
}

/* ---- hashed indexes: open addressing of index + 1 (0 = empty) --------------- */

struct kt_hidx {
	u32 *slot;
	u32 mask;
};

static int kt_hidx_init(struct kt_hidx *h, u32 n)
{
	u32 size = roundup_pow_of_two(max(2 * n, 4U));

	h->slot = kvcalloc(size, sizeof(u32), KT_GFP);
	h->mask = size - 1;
	return h->slot ? 0 : -ENOMEM;
}

static void kt_hidx_free(struct kt_hidx *h)
{
	kvfree(h->slot);
	h->slot = NULL;
}

/* The first slot for @hash at or after the empty one: add @idx there. */
static void kt_hidx_add(struct kt_hidx *h, u32 hash, u32 idx)
{
	u32 i = hash & h->mask;

	while (h->slot[i])
		i = (i + 1) & h->mask;
	h->slot[i] = idx + 1;
}

/* Walk the indexes that share @hash's probe sequence. */
#define kt_hidx_for_each(h, hash, i, idx)				\
	for ((i) = (hash) & (h)->mask;					\
	     (h)->slot[i] && ((idx) = (h)->slot[i] - 1, true);		\
	     (i) = ((i) + 1) & (h)->mask)

static u32 kt_name_hash(const char *name, u32 len)
{
	return jhash(name, len, 0);
}

/* ---- lifetime ---------------------------------------------------------------- */

static void kt_config_free(struct kt_config *cfg)
{
	u32 i;

	WARN_ON_ONCE(cfg->checks_live);	/* kt_checks_stop() first */
	for (i = 0; i < cfg->nchecks; i++)
		kt_check_free(&cfg->checks[i]);
	kvfree(cfg->checks);
	if (cfg->servers)
		for (i = 0; i < cfg->nservers; i++)
			kt_stats_put(cfg->servers[i].st);
	if (cfg->pools)
		for (i = 0; i < cfg->npools; i++) {
			kt_stats_put(cfg->pools[i].st);
			kvfree(cfg->pools[i].lblc);
			kt_persist_free(&cfg->pools[i]);
		}
	if (cfg->svc)
		for (i = 0; i < cfg->nservices; i++)
			kt_stats_put(cfg->svc[i].st);
	kvfree(cfg->servers);
	kvfree(cfg->pools);
	kvfree(cfg->svc);
	kvfree(cfg->svc_hash);
	if (cfg->scratch) {
		int cpu;

		/* may run in softirq: vfree defers itself there */
		for_each_possible_cpu(cpu)
			kvfree(cfg->scratch[cpu].match);
		kfree(cfg->scratch);
	}
	kt_free(cfg->blob);
	mem_cgroup_put(cfg->memcg);
	percpu_ref_exit(&cfg->ref);
	kfree(cfg);
	kt_alloc_dec();
}

/*
 * The last user let go of a retired configuration.  Context: any (the
 * percpu_ref's RCU callback, or a put in softirq or process context); it
 * was unpublished before being killed and the kill waited a grace period,
 * so no RCU reader can still find it.
 */
static void kt_config_release(struct percpu_ref *ref)
{
	kt_config_free(container_of(ref, struct kt_config, ref));
}

/* A reference on the running configuration, or NULL. */
struct kt_config *kt_config_tryget(struct kt_net *ktn)
{
	struct kt_config *cfg;

	rcu_read_lock();
	for (;;) {
		cfg = rcu_dereference(ktn->cfg);
		/* a killed one is already replaced: read again */
		if (!cfg || percpu_ref_tryget_live(&cfg->ref))
			break;
	}
	rcu_read_unlock();
	return cfg;
}

void kt_config_put(struct kt_config *cfg)
{
	percpu_ref_put(&cfg->ref);
}

struct kt_service *kt_config_service(struct kt_config *cfg,
				     const union kt_addr *la)
{
	struct kt_hidx h = { .slot = cfg->svc_hash, .mask = cfg->nsvc_hash - 1 };
	u32 i, idx;

	kt_hidx_for_each(&h, kt_addr_hash(la), i, idx)
		if (kt_addr_equal(&cfg->svc[idx].addr, la))
			return &cfg->svc[idx];
	return NULL;
}

/*
 * This CPU's parse and match scratch; BHs (and so preemption) off until
 * kt_scratch_put(): a connection's work and another's tasklet (softirq)
 * share it on one CPU.
 */
struct kt_scratch *kt_scratch_get(struct kt_config *cfg)
{
	local_bh_disable();
	return &cfg->scratch[smp_processor_id()];
}

void kt_scratch_put(void)
{
	local_bh_enable();
}

/* ---- building ------------------------------------------------------------------ */

static unsigned long kt_timeout(u32 ms, unsigned long def)
{
	return ms ? max_t(unsigned long, msecs_to_jiffies(ms), 1) : def;
}

/* lblc/lblcr table sets for a pool of @n servers: none without servers. */
static u32 kt_lblc_sets(const struct kt_rules_pool_info *pi)
{
	if ((pi->scheduler != KT_SCHED_LBLC && pi->scheduler != KT_SCHED_LBLCR) ||
	    !pi->nservers)
		return 0;
	return clamp_t(u32, roundup_pow_of_two(pi->nservers * 4), 4,
		       KT_LBLC_SETS_MAX);
}

static size_t kt_scratch_bytes(const struct kt_config *cfg)
{
	return sizeof(u32) * max(cfg->scratch_words, 1U) +
	       (sizeof(struct kt_http_field) + sizeof(struct kt_match_header)) *
	       cfg->max_fields + cfg->out_cap;
}

/*
 * What building @cfg will allocate, from the validated counts alone: the
 * runtime objects, their counters on every CPU, lblc tables, the scratch
 * on every CPU.
 */
static size_t kt_config_cost(const struct kt_config *cfg)
{
	size_t st = sizeof(struct kt_stats) +
		    sizeof(struct kt_pcpu_stats) * num_possible_cpus();
	struct kt_rules_pool_info pi;
	size_t sum;
	u32 p;

	sum = (sizeof(struct kt_service) + st) * cfg->nservices +
	      (sizeof(struct kt_pool) + st) * cfg->npools +
	      (sizeof(struct kt_server) + st) * cfg->nservers +
	      kt_scratch_bytes(cfg) * num_possible_cpus();
	for (p = 0; p < cfg->npools; p++) {
		kt_rules_pool(&cfg->rules, p, &pi);
		sum += sizeof(struct kt_lblc_entry) * KT_LBLC_WAYS * kt_lblc_sets(&pi);
		sum += kt_persist_cost(&pi);
		if (pi.check.kind != KT_CHECK_NONE)
			sum += (size_t)pi.nservers * (sizeof(struct kt_check) +
				(pi.check.kind == KT_CHECK_HTTP ?
				 KT_CHECK_REQ_MAX : 0));
	}
	return sum;
}

/* Checked servers of @cfg: those of pools with a health check. */
static u32 kt_config_checked(const struct kt_config *cfg)
{
	struct kt_rules_pool_info pi;
	u32 p, n = 0;

	for (p = 0; p < cfg->npools; p++) {
		kt_rules_pool(&cfg->rules, p, &pi);
		if (pi.check.kind != KT_CHECK_NONE)
			n += pi.nservers;
	}
	return n;
}

static int kt_config_scratch(struct kt_config *cfg)
{
	size_t words = max(cfg->scratch_words, 1U);
	int cpu;

	cfg->scratch = kcalloc(nr_cpu_ids, sizeof(*cfg->scratch),
			       KT_GFP);
	if (!cfg->scratch)
		return -ENOMEM;
	for_each_possible_cpu(cpu) {
		struct kt_scratch *s = &cfg->scratch[cpu];
		u8 *p = kvmalloc(kt_scratch_bytes(cfg), KT_GFP);

		if (!p)
			return -ENOMEM;
		s->match = (u32 *)p;
		kt_match_scratch_init(s->match, words);
		p += words * sizeof(u32);
		s->mh = (struct kt_match_header *)p;
		p += cfg->max_fields * sizeof(*s->mh);
		s->fields = (struct kt_http_field *)p;
		p += cfg->max_fields * sizeof(*s->fields);
		s->out = p;
		cond_resched();
	}
	return 0;
}

/*
 * Old objects by identity, to carry counters over: services and pools by
 * name, servers by pool and address.
 */
struct kt_carry {
	struct kt_config *old;
	struct kt_hidx svc, pool, server;
};

static int kt_carry_init(struct kt_carry *k, struct kt_config *old)
{
	u32 i;

	memset(k, 0, sizeof(*k));
	k->old = old;
	if (!old)
		return 0;
	if (kt_hidx_init(&k->svc, old->nservices) ||
	    kt_hidx_init(&k->pool, old->npools) ||
	    kt_hidx_init(&k->server, old->nservers))
		return -ENOMEM;
	for (i = 0; i < old->nservices; i++)
		kt_hidx_add(&k->svc, kt_name_hash(old->svc[i].name,
						  old->svc[i].name_len), i);
	for (i = 0; i < old->npools; i++)
		kt_hidx_add(&k->pool, kt_name_hash(old->pools[i].name,
						   old->pools[i].name_len), i);
	for (i = 0; i < old->nservers; i++)
		kt_hidx_add(&k->server, kt_addr_hash(&old->servers[i].addr) ^
			    old->servers[i].pool, i);
	return 0;
}

static void kt_carry_free(struct kt_carry *k)
{
	kt_hidx_free(&k->svc);
	kt_hidx_free(&k->pool);
	kt_hidx_free(&k->server);
}

static struct kt_stats *kt_carry_svc(struct kt_carry *k, const char *name,
				     u32 len)
{
	u32 i, idx;

	if (k->old)
		kt_hidx_for_each(&k->svc, kt_name_hash(name, len), i, idx) {
			const struct kt_service *o = &k->old->svc[idx];

			if (o->name_len == len && !memcmp(o->name, name, len))
				return kt_stats_carry(o->st);
		}
	return kt_stats_new();
}

static struct kt_pool *kt_carry_pool(struct kt_carry *k, const char *name,
				     u32 len)
{
	u32 i, idx;

	if (k->old)
		kt_hidx_for_each(&k->pool, kt_name_hash(name, len), i, idx) {
			struct kt_pool *o = &k->old->pools[idx];

			if (o->name_len == len && !memcmp(o->name, name, len))
				return o;
		}
	return NULL;
}

/* The server of @opool (of the old configuration) at @addr, or NULL. */
static struct kt_server *kt_carry_server(struct kt_carry *k,
					 const struct kt_pool *opool,
					 const union kt_addr *addr)
{
	u32 i, idx, op;

	if (opool) {
		op = opool - k->old->pools;
		kt_hidx_for_each(&k->server, kt_addr_hash(addr) ^ op, i, idx) {
			struct kt_server *o = &k->old->servers[idx];

			if (o->pool == op && kt_addr_equal(&o->addr, addr))
				return o;
		}
	}
	return NULL;
}

static int kt_config_pool(struct kt_config *cfg, u32 p, struct kt_carry *k,
			  struct netlink_ext_ack *extack)
{
	struct kt_pool *pool = &cfg->pools[p];
	struct kt_rules_server_info si;
	struct kt_rules_pool_info pi;
	struct kt_pool *opool;
	u32 i;

	kt_rules_pool(&cfg->rules, p, &pi);
	pool->name = (const char *)pi.name.ptr;
	pool->name_len = pi.name.len;
	pool->sched = pi.scheduler;
	pool->nservers = pi.nservers;
	pool->servers = &cfg->servers[pi.first_server];
	pool->check = pi.check;		/* its slices point into the blob */
	pool->persist = pi.persist;	/* likewise */
	spin_lock_init(&pool->lock);
	pool->nsets = kt_lblc_sets(&pi);
	if (pool->nsets) {
		pool->lblc = kvcalloc(pool->nsets * KT_LBLC_WAYS,
				      sizeof(*pool->lblc), KT_GFP);
		if (!pool->lblc)
			return -ENOMEM;
	}
	opool = kt_carry_pool(k, pool->name, pool->name_len);
	pool->st = opool ? kt_stats_carry(opool->st) : kt_stats_new();
	if (!pool->st)
		return -ENOMEM;

	for (i = 0; i < pool->nservers; i++) {
		struct kt_server *s = &pool->servers[i];

		kt_rules_server(&cfg->rules, pi.first_server + i, &si);
		s->addrlen = kt_sockaddr(&s->addr, si.family, si.addr, si.port);
		if (s->addrlen < 0) {
			NL_SET_ERR_MSG(extack, "server address family");
			return -EINVAL;
		}
		s->port = si.port;
		s->id = si.id;
		s->weight = si.weight;
		s->state = si.state;
		s->pool = p;
		s->key = kt_addr_hash(&s->addr);
		s->down_until = jiffies;
		s->fail_start = jiffies;
		spin_lock_init(&s->idle_lock);
		INIT_LIST_HEAD(&s->idle);
		s->carried = kt_carry_server(k, opool, &s->addr);
		s->st = s->carried ? kt_stats_carry(s->carried->st) :
				     kt_stats_new();
		if (!s->st)
			return -ENOMEM;
		if (pool->check.kind != KT_CHECK_NONE) {
			int err = kt_check_init(&cfg->checks[cfg->nchecks++],
						cfg, pool, s);

			if (err)
				return err;
		}
	}
	return kt_persist_init(pool, &pi);	/* the servers' ids are set */
}

static int kt_config_service_build(struct kt_config *cfg, u32 i,
				   struct kt_carry *k, struct kt_hidx *h,
				   struct netlink_ext_ack *extack)
{
	struct kt_service *svc = &cfg->svc[i];
	struct kt_http_limits *lim = &svc->lim;
	struct kt_rules_service_info si;
	u32 slot, idx, hash;

	kt_rules_service(&cfg->rules, i, &si);
	svc->name = (const char *)si.name.ptr;
	svc->name_len = si.name.len;
	svc->idx = i;
	svc->flags = si.flags;
	svc->addrlen = kt_sockaddr(&svc->addr, si.family, si.addr, si.port);
	if (svc->addrlen < 0) {
		NL_SET_ERR_MSG(extack, "service address family");
		return -EINVAL;
	}
	hash = kt_addr_hash(&svc->addr);
	kt_hidx_for_each(h, hash, slot, idx) {
		if (kt_addr_equal(&cfg->svc[idx].addr, &svc->addr)) {
			NL_SET_ERR_MSG(extack, "two services listen on one address");
			return -EINVAL;
		}
	}
	kt_hidx_add(h, hash, i);

	kt_http_limits_init(lim);
	if (si.limits[KT_LIMIT_REQUEST_LINE])
		lim->request_line = si.limits[KT_LIMIT_REQUEST_LINE];
	if (si.limits[KT_LIMIT_HEADER_SIZE])
		lim->head = si.limits[KT_LIMIT_HEADER_SIZE];
	if (si.limits[KT_LIMIT_HEADERS])
		lim->fields = si.limits[KT_LIMIT_HEADERS];
	svc->max_conns = si.limits[KT_LIMIT_CONNECTIONS];
	svc->src_conns = si.limits[KT_LIMIT_SOURCE_CONNECTIONS];
	svc->src_rate = si.limits[KT_LIMIT_SOURCE_RATE];
	svc->backlog = si.limits[KT_LIMIT_BACKLOG] ?: KT_DEF_BACKLOG;
	svc->log_mode = si.log_mode;		/* validated: KT_LOG_* */
	svc->log_sample = si.log_sample;
	svc->t_header = kt_timeout(si.timeouts_ms[KT_TIMEOUT_HEADER],
				   KT_DEF_T_HEADER);
	svc->t_idle = kt_timeout(si.timeouts_ms[KT_TIMEOUT_IDLE], KT_DEF_T_IDLE);
	svc->t_connect = kt_timeout(si.timeouts_ms[KT_TIMEOUT_CONNECT],
				    KT_DEF_T_CONNECT);
	svc->t_backend = kt_timeout(si.timeouts_ms[KT_TIMEOUT_BACKEND],
				    KT_DEF_T_BACKEND);
	svc->st = kt_carry_svc(k, svc->name, svc->name_len);
	return svc->st ? 0 : -ENOMEM;
}

/* The parse scratch covers every service's limits; the default connection limit. */
static void kt_config_sizes(struct kt_config *cfg)
{
	struct kt_rules_service_info si;
	u32 i, fields = KT_HTTP_DEF_FIELDS, line = KT_HTTP_DEF_REQUEST_LINE;
	u32 head = KT_HTTP_DEF_HEAD;
	u64 mem;

	for (i = 0; i < cfg->nservices; i++) {
		kt_rules_service(&cfg->rules, i, &si);
		fields = max(fields, si.limits[KT_LIMIT_HEADERS]);
		line = max(line, si.limits[KT_LIMIT_REQUEST_LINE]);
		head = max(head, si.limits[KT_LIMIT_HEADER_SIZE]);
	}
	cfg->max_fields = fields;
	cfg->out_cap = line + KT_HTTP_HOST_MAX + 1;
	cfg->max_conns = kt_rules_max_conns(&cfg->rules);
	if (!cfg->max_conns) {
		mem = (u64)totalram_pages() << PAGE_SHIFT;
		cfg->max_conns = max_t(u64, KT_MIN_DEF_CONNS,
				       div_u64(mem / 2, round_up(head, PAGE_SIZE) +
					       KT_CONN_OVERHEAD));
	}
}

/*
 * Build a configuration from @blob (kt_alloc'ed; owned by the result, or
 * freed on failure).  @old, if any, donates counters.  Context: process,
 * under ktn->lock; allocations are charged to the caller's memory cgroup.
 */
struct kt_config *kt_config_build(void *blob, size_t len, struct kt_config *old,
				  struct netlink_ext_ack *extack)
{
	struct kt_hidx svc_hash = { };
	struct kt_carry carry = { };
	struct kt_config *cfg;
	const char *why = NULL;
	int err = -ENOMEM;
	u32 i, n;

	cfg = kzalloc(sizeof(*cfg), KT_GFP);
	if (!cfg) {
		kt_free(blob);
		return ERR_PTR(-ENOMEM);
	}
	if (percpu_ref_init(&cfg->ref, kt_config_release, 0, KT_GFP)) {
		kfree(cfg);
		kt_free(blob);
		return ERR_PTR(-ENOMEM);
	}
	kt_alloc_inc();
	cfg->blob = blob;
	cfg->len = len;
	cfg->memcg = get_mem_cgroup_from_mm(current->mm);
	if (kt_rules_validate(&cfg->rules, blob, len, &why)) {
		/* why is a static string of the validator */
		if (extack)
			extack->_msg = why ? why : "invalid rule table";
		err = -EINVAL;
		goto err;
	}
	cfg->nservices = kt_rules_nservices(&cfg->rules);
	cfg->npools = kt_rules_npools(&cfg->rules);
	cfg->nservers = cfg->rules.nservers;
	cfg->scratch_words = kt_match_scratch_words(&cfg->rules);
	kt_config_sizes(cfg);
	if (kt_config_cost(cfg) > KT_CONFIG_MEM_MAX) {
		NL_SET_ERR_MSG(extack,
			       "the configuration needs too much kernel memory");
		err = -E2BIG;
		goto err;
	}
	cfg->svc = kvcalloc(max(cfg->nservices, 1U), sizeof(*cfg->svc),
			    KT_GFP);
	cfg->pools = kvcalloc(max(cfg->npools, 1U), sizeof(*cfg->pools),
			      KT_GFP);
	cfg->servers = kvcalloc(max(cfg->nservers, 1U), sizeof(*cfg->servers),
				KT_GFP);
	n = kt_config_checked(cfg);
	cfg->checks = n ? kvcalloc(n, sizeof(*cfg->checks), KT_GFP) : NULL;
	if (!cfg->svc || !cfg->pools || !cfg->servers || (n && !cfg->checks) ||
	    kt_hidx_init(&svc_hash, cfg->nservices) ||
	    kt_carry_init(&carry, old) || kt_config_scratch(cfg))
		goto err;
	for (i = 0; i < cfg->npools; i++) {
		err = kt_config_pool(cfg, i, &carry, extack);
		if (err)
			goto err;
		cond_resched();
	}
	for (i = 0; i < cfg->nservices; i++) {
		err = kt_config_service_build(cfg, i, &carry, &svc_hash, extack);
		if (err)
			goto err;
		cond_resched();
	}
	cfg->svc_hash = svc_hash.slot;
	cfg->nsvc_hash = svc_hash.mask + 1;
	kt_carry_free(&carry);
	return cfg;
err:
	kt_hidx_free(&svc_hash);
	kt_carry_free(&carry);
	kt_config_free(cfg);
	return ERR_PTR(err);
}

/* ---- committing ------------------------------------------------------------------ */

/* Close the listeners not marked keep; clear the marks. */
static void kt_listeners_sweep(struct kt_net *ktn)
{
	struct kt_listener *l, *tmp;

	list_for_each_entry_safe(l, tmp, &ktn->listeners, node) {
		if (!l->keep)
			kt_listener_close(l);
		else
			l->keep = false;
	}
}

/*
 * Make @cfg (may be NULL: no services) the running configuration.  On
 * failure nothing changed and @cfg is freed.  Context: process, under
 * ktn->lock.
 */
int kt_config_commit(struct kt_net *ktn, struct kt_config *cfg,
		     const char *source, struct netlink_ext_ack *extack)
{
	struct kt_config *old;
	struct kt_listener *l;
	u32 i;
	int err = 0;

	lockdep_assert_held(&ktn->lock);
	old = rcu_dereference_protected(ktn->cfg, lockdep_is_held(&ktn->lock));
	list_for_each_entry(l, &ktn->listeners, node)
		l->keep = false;
	for (i = 0; cfg && i < cfg->nservices; i++) {
		struct kt_service *svc = &cfg->svc[i];
		struct kt_service *osvc = old ? kt_config_service(old, &svc->addr) :
					  NULL;

		if (svc->flags & KT_SERVICE_TLS)
			continue;	/* the TLS daemon listens (kt_tls.c) */
		if (osvc && osvc->listener) {
			svc->listener = osvc->listener;
		} else {
			err = kt_listener_open(ktn, svc, extack);
			if (err)
				goto undo;
		}
		svc->listener->keep = true;
		cond_resched();
	}
	if (cfg && (cfg->svc && cfg->nservices)) {
		for (i = 0; i < cfg->nservices; i++)
			if (cfg->svc[i].src_conns || cfg->svc[i].src_rate)
				break;
		if (i < cfg->nservices) {
			err = kt_srctab_init(ktn);
			if (err)
				goto undo;
		}
	}
	err = kt_log_prepare(ktn, cfg);	/* the access log's ring */
	if (err)
		goto undo;

	if (cfg) {
		cfg->ktn = ktn;
		cfg->generation = ++ktn->generation;
		strscpy(cfg->source, source ? source : "", sizeof(cfg->source));
	} else {
		ktn->generation++;
	}
	WRITE_ONCE(ktn->max_conns, cfg ? cfg->max_conns : 0);
	kt_log_config(ktn, cfg);
	old = rcu_replace_pointer(ktn->cfg, cfg, lockdep_is_held(&ktn->lock));
	kt_listeners_sweep(ktn);
	for (i = 0; cfg && i < cfg->nservices; i++)
		if (cfg->svc[i].listener)
			kt_listener_update(cfg->svc[i].listener, &cfg->svc[i]);
	kt_listeners_kick(ktn);		/* the limit may have changed */
	kt_listeners_start(ktn);	/* accept what waited for this commit */
	if (old) {
		kt_checks_stop(old);	/* before the new ones take their state */
		kt_idle_retire(old);
	}
	if (cfg)
		kt_checks_start(cfg);
	if (old)
		percpu_ref_kill(&old->ref);
	return 0;

undo:
	/* Close what this commit opened: listeners the old config does not have. */
	for (i = 0; i < cfg->nservices; i++) {
		struct kt_service *svc = &cfg->svc[i];
		struct kt_service *osvc = old ? kt_config_service(old, &svc->addr) :
					  NULL;

		if (svc->listener && !(osvc && osvc->listener == svc->listener))
			kt_listener_close(svc->listener);
	}
	list_for_each_entry(l, &ktn->listeners, node)
		l->keep = false;
	kt_config_free(cfg);
	return err;
}

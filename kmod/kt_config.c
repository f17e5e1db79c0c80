// SPDX-License-Identifier: GPL-2.0
/*
 * kt_config.c - configurations: build from a validated blob, swap, free;
 * listeners; counters.  Included by ktcpvs.c (one translation unit).
 *
 * A commit builds the whole new configuration aside, opens the listeners
 * it needs that are not open yet, and only then publishes it with
 * rcu_replace_pointer() under ktn->lock.  Any failure before the swap
 * undoes what it opened and leaves the running configuration untouched.
 * After the swap, listeners no longer wanted are closed and the
 * connections that reached them are asked to close; the old configuration
 * is freed when its last connection lets go, after an RCU grace period.
 */

#define KT_DEF_T_HEADER		(10 * HZ)
#define KT_DEF_T_IDLE		(60 * HZ)
#define KT_DEF_T_CONNECT	(5 * HZ)
#define KT_DEF_T_BACKEND	(60 * HZ)
#define KT_BACKLOG		1024

/* ---- counters ---------------------------------------------------------- */

static struct kt_stats *kt_stats_new(void)
{
	struct kt_stats *st = kzalloc(sizeof(*st), GFP_KERNEL);

	if (!st)
		return NULL;
	st->pc = alloc_percpu(struct kt_pcpu_stats);
	if (!st->pc) {
		kfree(st);
		return NULL;
	}
	refcount_set(&st->ref, 1);
	atomic_inc(&kt_allocs);
	return st;
}

static void kt_stats_put(struct kt_stats *st)
{
	if (st && refcount_dec_and_test(&st->ref)) {
		free_percpu(st->pc);
		kfree(st);
		atomic_dec(&kt_allocs);
	}
}

/* Take over the counters of the same object in the old configuration. */
static struct kt_stats *kt_stats_carry(struct kt_stats *old)
{
	if (old) {
		refcount_inc(&old->ref);
		return old;
	}
	return kt_stats_new();
}

static void kt_stats_sum(const struct kt_stats *st, struct kt_pcpu_stats *sum)
{
	int cpu, k;

	memset(sum, 0, sizeof(*sum));
	for_each_possible_cpu(cpu) {
		const struct kt_pcpu_stats *p = per_cpu_ptr(st->pc, cpu);

		sum->conns += READ_ONCE(p->conns);
		sum->requests += READ_ONCE(p->requests);
		sum->bytes_in += READ_ONCE(p->bytes_in);
		sum->bytes_out += READ_ONCE(p->bytes_out);
		sum->spliced += READ_ONCE(p->spliced);
		for (k = 0; k < KT_E_MAX; k++)
			sum->errors[k] += READ_ONCE(p->errors[k]);
	}
}

/* ---- building a configuration ---------------------------------------- */

static bool kt_slice_eq(const char *a, u32 alen, const struct kt_match_slice *b)
{
	return alen == b->len && !memcmp(a, b->ptr, alen);
}

static int kt_sockaddr(struct sockaddr_storage *ss, u8 family,
		       const u8 *addr, u16 port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == KT_MATCH_AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr, 4);
		return sizeof(*sin);
	}
	if (family == KT_MATCH_AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, addr, 16);
		return sizeof(*sin6);
	}
	return -EINVAL;
}

static void kt_config_free(struct kt_config *cfg)
{
	u32 i;

	if (cfg->servers)
		for (i = 0; i < cfg->nservers; i++)
			kt_stats_put(cfg->servers[i].st);
	if (cfg->pools)
		for (i = 0; i < cfg->npools; i++) {
			kt_stats_put(cfg->pools[i].st);
			kvfree(cfg->pools[i].lblc);
		}
	if (cfg->svc)
		for (i = 0; i < cfg->nservices; i++)
			kt_stats_put(cfg->svc[i].st);
	kvfree(cfg->servers);
	kvfree(cfg->pools);
	kvfree(cfg->svc);
	if (cfg->scratch) {
		int cpu;

		for_each_possible_cpu(cpu)
			kvfree(cfg->scratch[cpu]);	/* may run in softirq: vfree defers */
		kfree(cfg->scratch);
	}
	kt_free(cfg->blob);
	kfree(cfg);
	atomic_dec(&kt_allocs);
}

static void kt_config_free_rcu(struct rcu_head *head)
{
	kt_config_free(container_of(head, struct kt_config, rcu));
}

static void kt_config_put(struct kt_config *cfg)
{
	if (refcount_dec_and_test(&cfg->ref))
		call_rcu(&cfg->rcu, kt_config_free_rcu);
}

static unsigned long kt_timeout(u32 ms, unsigned long def)
{
	return ms ? max_t(unsigned long, msecs_to_jiffies(ms), 1) : def;
}

static int kt_config_servers(struct kt_config *cfg, struct kt_config *old,
			     struct netlink_ext_ack *extack)
{
	struct kt_rules_server_info si;
	struct kt_rules_pool_info pi, opi;
	u32 p, k, i;

	for (p = 0; p < cfg->npools; p++) {
		struct kt_pool *pool = &cfg->pools[p];
		struct kt_pool *opool = NULL;

		kt_rules_pool(&cfg->rules, p, &pi);
		if (pi.first_server + pi.nservers > cfg->nservers ||
		    pi.scheduler >= KT_SCHED_COUNT) {
			NL_SET_ERR_MSG(extack, "pool refers to missing servers");
			return -EINVAL;
		}
		pool->name = (const char *)pi.name.ptr;
		pool->name_len = pi.name.len;
		pool->sched = pi.scheduler;
		pool->nservers = pi.nservers;
		pool->servers = &cfg->servers[pi.first_server];
		spin_lock_init(&pool->lock);
		if (pool->sched == KT_SCHED_LBLC || pool->sched == KT_SCHED_LBLCR) {
			pool->lblc = kvcalloc(KT_LBLC_SETS * KT_LBLC_WAYS,
					      sizeof(*pool->lblc), GFP_KERNEL);
			if (!pool->lblc)
				return -ENOMEM;
		}
		for (k = 0; old && k < old->npools; k++) {
			kt_rules_pool(&old->rules, k, &opi);
			if (kt_slice_eq(pool->name, pool->name_len, &opi.name)) {
				opool = &old->pools[k];
				break;
			}
		}
		pool->st = kt_stats_carry(opool ? opool->st : NULL);
		if (!pool->st)
			return -ENOMEM;

		for (i = 0; i < pool->nservers; i++) {
			struct kt_server *s = &pool->servers[i];
			struct kt_server *os = NULL;

			kt_rules_server(&cfg->rules, pi.first_server + i, &si);
			s->addrlen = kt_sockaddr(&s->addr, si.family, si.addr,
						 si.port);
			if (s->addrlen < 0) {
				NL_SET_ERR_MSG(extack, "server address family");
				return -EINVAL;
			}
			s->port = si.port;
			s->weight = si.weight;
			s->state = si.state;
			s->pool = p;
			s->down_until = jiffies;
			s->fail_start = jiffies;
			spin_lock_init(&s->idle_lock);
			INIT_LIST_HEAD(&s->idle);
			for (k = 0; opool && k < opool->nservers; k++) {
				if (kt_addr_equal(&opool->servers[k].addr, &s->addr)) {
					os = &opool->servers[k];
					break;
				}
			}
			s->st = kt_stats_carry(os ? os->st : NULL);
			if (!s->st)
				return -ENOMEM;
		}
	}
	return 0;
}

static int kt_config_services(struct kt_config *cfg, struct kt_config *old,
			      struct netlink_ext_ack *extack)
{
	struct kt_rules_service_info si;
	u32 i, k;

	for (i = 0; i < cfg->nservices; i++) {
		struct kt_service *svc = &cfg->svc[i];
		struct kt_service *osvc = NULL;
		struct kt_http_limits *lim = &svc->lim;

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
		for (k = 0; k < i; k++) {
			if (kt_addr_equal(&cfg->svc[k].addr, &svc->addr)) {
				NL_SET_ERR_MSG(extack,
					       "two services listen on one address");
				return -EINVAL;
			}
		}
		kt_http_limits_init(lim);
		if (si.limits[KT_LIMIT_REQUEST_LINE])
			lim->request_line = min_t(u32, si.limits[KT_LIMIT_REQUEST_LINE],
						  KT_HTTP_DEF_HEAD);
		if (si.limits[KT_LIMIT_HEADER_SIZE])
			lim->head = min_t(u32, si.limits[KT_LIMIT_HEADER_SIZE],
					  1U << 20);
		if (si.limits[KT_LIMIT_HEADERS])
			lim->fields = min_t(u32, si.limits[KT_LIMIT_HEADERS], 1000);
		svc->max_conns = si.limits[KT_LIMIT_CONNECTIONS];
		svc->t_header = kt_timeout(si.timeouts_ms[KT_TIMEOUT_HEADER],
					   KT_DEF_T_HEADER);
		svc->t_idle = kt_timeout(si.timeouts_ms[KT_TIMEOUT_IDLE],
					 KT_DEF_T_IDLE);
		svc->t_connect = kt_timeout(si.timeouts_ms[KT_TIMEOUT_CONNECT],
					    KT_DEF_T_CONNECT);
		svc->t_backend = kt_timeout(si.timeouts_ms[KT_TIMEOUT_BACKEND],
					    KT_DEF_T_BACKEND);
		for (k = 0; old && k < old->nservices; k++) {
			if (kt_slice_eq(svc->name, svc->name_len,
					&(struct kt_match_slice){
						.ptr = (const u8 *)old->svc[k].name,
						.len = old->svc[k].name_len })) {
				osvc = &old->svc[k];
				break;
			}
		}
		svc->st = kt_stats_carry(osvc ? osvc->st : NULL);
		if (!svc->st)
			return -ENOMEM;
	}
	return 0;
}

static int kt_config_scratch(struct kt_config *cfg)
{
	size_t words = max(cfg->scratch_words, 1U);
	int cpu;

	for_each_possible_cpu(cpu) {
		cfg->scratch[cpu] = kvmalloc_array(words, sizeof(u32), GFP_KERNEL);
		if (!cfg->scratch[cpu])
			return -ENOMEM;
		kt_match_scratch_init(cfg->scratch[cpu], words);
	}
	return 0;
}

/*
 * Build a configuration from @blob (kt_alloc'ed; owned by the result, or
 * freed on failure).  @old, if any, donates counters.
 */
static struct kt_config *kt_config_build(void *blob, size_t len,
					 struct kt_config *old,
					 struct netlink_ext_ack *extack)
{
	struct kt_config *cfg;
	const char *why = NULL;
	int err = -ENOMEM;

	cfg = kzalloc(sizeof(*cfg), GFP_KERNEL);
	if (!cfg) {
		kt_free(blob);
		return ERR_PTR(-ENOMEM);
	}
	atomic_inc(&kt_allocs);
	refcount_set(&cfg->ref, 1);
	cfg->blob = blob;
	cfg->len = len;
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
	cfg->svc = kvcalloc(max(cfg->nservices, 1U), sizeof(*cfg->svc), GFP_KERNEL);
	cfg->pools = kvcalloc(max(cfg->npools, 1U), sizeof(*cfg->pools), GFP_KERNEL);
	cfg->servers = kvcalloc(max(cfg->nservers, 1U), sizeof(*cfg->servers),
				GFP_KERNEL);
	cfg->scratch_words = kt_match_scratch_words(&cfg->rules);
	cfg->scratch = kcalloc(nr_cpu_ids, sizeof(*cfg->scratch), GFP_KERNEL);
	if (!cfg->svc || !cfg->pools || !cfg->servers || !cfg->scratch)
		goto err;
	err = kt_config_scratch(cfg);
	if (err)
		goto err;
	err = kt_config_servers(cfg, old, extack);
	if (err)
		goto err;
	err = kt_config_services(cfg, old, extack);
	if (err)
		goto err;
	return cfg;
err:
	kt_config_free(cfg);
	return ERR_PTR(err);
}

/* ---- listeners --------------------------------------------------------- */

static struct kt_listener *kt_listener_find(struct kt_net *ktn,
					    const struct sockaddr_storage *a)
{
	struct kt_listener *l;

	list_for_each_entry(l, &ktn->listeners, node)
		if (kt_addr_equal(&l->addr, a))
			return l;
	return NULL;
}

static int kt_listener_open(struct kt_net *ktn, const struct kt_service *svc,
			    struct netlink_ext_ack *extack)
{
	struct kt_listener *l;
	struct socket *sock;
	struct sock *sk;
	int err;

	l = kzalloc(sizeof(*l), GFP_KERNEL);
	if (!l)
		return -ENOMEM;
	err = sock_create_kern(ktn->net, svc->addr.ss_family, SOCK_STREAM,
			       IPPROTO_TCP, &sock);
	if (err)
		goto err_free;
	sk = sock->sk;
	sock_set_reuseaddr(sk);
	ip_sock_set_freebind(sk);	/* a virtual IP may arrive later */
	if (svc->addr.ss_family == AF_INET6)
		ip6_sock_set_v6only(sk);
	err = kernel_bind(sock, (struct sockaddr *)&svc->addr, svc->addrlen);
	if (err) {
		NL_SET_ERR_MSG(extack, "cannot bind the service's listen address");
		goto err_sock;
	}
	err = kernel_listen(sock, KT_BACKLOG);
	if (err)
		goto err_sock;

	l->ktn = ktn;
	l->sock = sock;
	l->addr = svc->addr;
	l->addrlen = svc->addrlen;
	l->keep = true;
	INIT_WORK(&l->accept_work, kt_accept_work);
	write_lock_bh(&sk->sk_callback_lock);
	sk->sk_user_data = l;
	l->saved_data_ready = sk->sk_data_ready;
	sk->sk_data_ready = kt_listen_data_ready;
	write_unlock_bh(&sk->sk_callback_lock);
	list_add_tail(&l->node, &ktn->listeners);
	return 0;

err_sock:
	sock_release(sock);
err_free:
	kfree(l);
	return err;
}

static void kt_listener_close(struct kt_listener *l)
{
	struct sock *sk = l->sock->sk;

	write_lock_bh(&sk->sk_callback_lock);
	sk->sk_user_data = NULL;
	sk->sk_data_ready = l->saved_data_ready;
	write_unlock_bh(&sk->sk_callback_lock);
	cancel_work_sync(&l->accept_work);
	list_del(&l->node);
	kernel_sock_shutdown(l->sock, SHUT_RDWR);
	sock_release(l->sock);
	kt_conns_kill(l->ktn, &l->addr);
	kfree(l);
}

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
 * failure nothing changed and @cfg is freed.  Caller holds ktn->lock.
 */
static int kt_config_commit(struct kt_net *ktn, struct kt_config *cfg,
			    const char *source, struct netlink_ext_ack *extack)
{
	struct kt_listener *l, *tmp;
	struct kt_config *old;
	u32 i;
	int err;

	lockdep_assert_held(&ktn->lock);
	list_for_each_entry(l, &ktn->listeners, node)
		l->keep = false;
	for (i = 0; cfg && i < cfg->nservices; i++) {
		l = kt_listener_find(ktn, &cfg->svc[i].addr);
		if (l) {
			l->keep = true;
			continue;
		}
		err = kt_listener_open(ktn, &cfg->svc[i], extack);
		if (err)
			goto undo;
	}
	if (cfg) {
		cfg->generation = ++ktn->generation;
		strscpy(cfg->source, source ? source : "", sizeof(cfg->source));
	} else {
		ktn->generation++;
	}
	old = rcu_replace_pointer(ktn->cfg, cfg, lockdep_is_held(&ktn->lock));
	kt_listeners_sweep(ktn);
	if (old) {
		kt_config_retire(old);
		kt_config_put(old);
	}
	return 0;

undo:
	/* Close what this commit opened: the new ones are the unmarked tail. */
	list_for_each_entry_safe(l, tmp, &ktn->listeners, node) {
		bool ours = true;
		struct kt_config *cur = rcu_dereference_protected(ktn->cfg,
					lockdep_is_held(&ktn->lock));

		if (cur && kt_config_service(cur, &l->addr))
			ours = false;
		if (ours)
			kt_listener_close(l);
		else
			l->keep = false;
	}
	kt_config_free(cfg);
	return err;
}

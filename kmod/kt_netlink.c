// SPDX-License-Identifier: GPL-2.0
/*
 * kt_netlink.c - the generic netlink family "ktcpvs": how l7ctl configures
 * and observes the switch (protocol: uapi/ktcpvs.h, docs/netlink.md).
 *
 * Every doit and dumpit runs in the caller's process context under
 * genl_mutex (the family is not parallel_ops); configuration changes also
 * take the namespace's lock (kt.h).  Commands that change anything need
 * CAP_NET_ADMIN in the user namespace that owns the network namespace
 * (GENL_UNS_ADMIN_PERM): a container's root may configure its own
 * namespace, and what it applies is bounded (the validator's counts,
 * KT_CONFIG_MEM_MAX) and charged to its memory cgroup.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <net/genetlink.h>
#include <net/net_namespace.h>

#include "uapi/ktcpvs.h"
#include "kt.h"

#define KT_TXN_TIMEOUT	(30 * HZ)

static struct genl_family kt_genl_family;

/*
 * Per-command policies.  Validation is strict (resv_start_op 0), which
 * includes NL_VALIDATE_UNSPEC: every attribute a policy leaves unspecified
 * is refused with EINVAL, so a command accepts exactly what its policy
 * lists.  Commands that take nothing use the empty policy.
 */
static const struct nla_policy kt_noattr_policy[KTCPVS_A_MAX + 1] = { };

static struct netlink_range_validation kt_size_range = {
	.min = 1, .max = KTCPVS_CONFIG_MAX,
};

static struct netlink_range_validation kt_offset_range = {
	.min = 0, .max = KTCPVS_CONFIG_MAX - 1,
};

/*
 * nla_policy's own min/max are s16 on 6.1: every bound above S16_MAX must
 * use a range struct (NLA_POLICY_FULL_RANGE), or validation WARNs.
 */
static struct netlink_range_validation kt_chunk_range = {
	.min = 1, .max = KTCPVS_CHUNK_MAX,
};

static const struct nla_policy kt_begin_policy[KTCPVS_A_MAX + 1] = {
	[KTCPVS_A_CONFIG_SIZE] = NLA_POLICY_FULL_RANGE(NLA_U32, &kt_size_range),
	[KTCPVS_A_SOURCE] = { .type = NLA_NUL_STRING, .len = 255 },
};

static const struct nla_policy kt_chunk_policy[KTCPVS_A_MAX + 1] = {
	[KTCPVS_A_TXN_ID] = { .type = NLA_U32 },
	[KTCPVS_A_OFFSET] = NLA_POLICY_FULL_RANGE(NLA_U32, &kt_offset_range),
	[KTCPVS_A_DATA] = NLA_POLICY_FULL_RANGE(NLA_BINARY, &kt_chunk_range),
};

static struct netlink_range_validation kt_weight_range = {
	.min = 0, .max = U16_MAX,
};

static const struct nla_policy kt_server_policy[KTCPVS_A_MAX + 1] = {
	[KTCPVS_A_OBJ_POOL] = { .type = NLA_BINARY, .len = 255 },
	[KTCPVS_A_OBJ_ADDR] = NLA_POLICY_EXACT_LEN(20),
	[KTCPVS_A_WEIGHT] = NLA_POLICY_FULL_RANGE(NLA_U32, &kt_weight_range),
	[KTCPVS_A_STATE] = NLA_POLICY_MAX(NLA_U8, KT_SERVER_DOWN),
};

static const struct nla_policy kt_txn_policy[KTCPVS_A_MAX + 1] = {
	[KTCPVS_A_TXN_ID] = { .type = NLA_U32 },
};

static struct netlink_range_validation kt_fd_range = {
	.min = 0, .max = INT_MAX,
};

static const struct nla_policy kt_adopt_policy[KTCPVS_A_MAX + 1] = {
	[KTCPVS_A_FD] = NLA_POLICY_FULL_RANGE(NLA_U32, &kt_fd_range),
	[KTCPVS_A_OBJ_ADDR] = NLA_POLICY_EXACT_LEN(20),
	[KTCPVS_A_TLS_NAMES] = { .type = NLA_BINARY, .len = KT_TLS_NAMES_MAX },
};

/*
 * The "log" group carries client addresses and paths: only an admin of the
 * namespace may listen.  A kernel without the flag (before 6.7, unless its
 * stable series took it, as 6.1.y and 6.6.y did) would let anyone: refused.
 */
#ifndef GENL_MCAST_CAP_NET_ADMIN
#error "the access log needs GENL_MCAST_CAP_NET_ADMIN (linux 6.7, 6.6.y, 6.1.y)"
#endif

static const struct genl_multicast_group kt_mcgrps[] = {
	[KT_MCGRP_CONFIG] = { .name = KTCPVS_MCGRP_CONFIG },
	[KT_MCGRP_LOG] = { .name = KTCPVS_MCGRP_LOG,
			   .flags = GENL_MCAST_CAP_NET_ADMIN },
};

/*
 * Multicasts from works (the access log's flush, health check changes)
 * take kt_mc_sem for reading; kt_netlink_exit() takes it for writing
 * before the family goes, so none is sent on group numbers the family no
 * longer owns.  Doits and dumpits run under genl_mutex, which the family's
 * unregistration takes: they send directly.
 */
static DECLARE_RWSEM(kt_mc_sem);
static bool kt_mc_closed;	/* under kt_mc_sem */

/*
 * Send @skb (consumed) to @group of the family in @net.  0, -ESRCH when
 * nobody there listens, -ENOBUFS when a listener had no room, -ESHUTDOWN
 * when the family is going.  Context: process; takes kt_mc_sem.
 */
int kt_multicast(struct net *net, struct sk_buff *skb, unsigned int group)
{
	int err;

	down_read(&kt_mc_sem);
	if (kt_mc_closed) {
		nlmsg_free(skb);
		err = -ESHUTDOWN;
	} else {
		err = genlmsg_multicast_netns(&kt_genl_family, net, skb, 0, group,
					      GFP_KERNEL);
	}
	up_read(&kt_mc_sem);
	return err;
}

/* A message header of the family; NULL when @skb has no room. */
void *kt_genl_put(struct sk_buff *skb, u32 portid, u32 seq, int flags, u8 cmd)
{
	return genlmsg_put(skb, portid, seq, &kt_genl_family, flags, cmd);
}

/*
 * Does some socket listen on the "log" group?  netlink keeps one map for
 * all namespaces: a listener in another namespace counts too.  Context:
 * any.
 */
bool kt_log_listened(struct net *net)
{
	return genl_has_listeners(&kt_genl_family, net, KT_MCGRP_LOG) > 0;
}

/*
 * A notification for the "config" group: kt_notify_new() gives the message
 * with its header (NULL when out of memory), the caller adds attributes
 * (freeing the message if one does not fit), kt_notify_send() sends it.
 * Best effort.  Context: process.
 */
static struct sk_buff *kt_notify_new(u8 cmd, void **hdr)
{
	struct sk_buff *msg = nlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);

	if (!msg)
		return NULL;
	*hdr = genlmsg_put(msg, 0, 0, &kt_genl_family, 0, cmd);
	if (!*hdr) {
		nlmsg_free(msg);
		return NULL;
	}
	return msg;
}

static void kt_notify_send(struct kt_net *ktn, struct sk_buff *msg, void *hdr)
{
	genlmsg_end(msg, hdr);
	kt_multicast(ktn->net, msg, KT_MCGRP_CONFIG);
}

/*
 * Tell listeners of the "config" group that the namespace's configuration
 * changed: its new generation, and what changed it (the command number).
 * Best effort: a failed notification does not fail the change.
 */
static void kt_notify(struct kt_net *ktn, u8 cmd)
{
	struct sk_buff *msg;
	void *hdr;

	msg = kt_notify_new(KTCPVS_CMD_NOTIFY, &hdr);
	if (!msg)
		return;
	if (nla_put_u64_64bit(msg, KTCPVS_A_GENERATION, ktn->generation,
			      KTCPVS_A_PAD) ||
	    nla_put_u8(msg, KTCPVS_A_OBJ_KIND, cmd)) {
		nlmsg_free(msg);
		return;
	}
	kt_notify_send(ktn, msg, hdr);
}

static int kt_fill_info(struct sk_buff *msg, struct kt_net *ktn)
{
	struct kt_config *cfg;
	u32 nservices = 0;
	int err = 0;

	cfg = rcu_dereference_protected(ktn->cfg, lockdep_is_held(&ktn->lock));
	if (cfg)
		nservices = cfg->nservices;
	if (nla_put_string(msg, KTCPVS_A_MODULE_VERSION, KTCPVS_VERSION) ||
	    nla_put_u32(msg, KTCPVS_A_PROTO_VERSION, KTCPVS_PROTO_VERSION) ||
	    nla_put_u32(msg, KTCPVS_A_SERVICE_COUNT, nservices) ||
	    nla_put_u64_64bit(msg, KTCPVS_A_GENERATION, ktn->generation,
			      KTCPVS_A_PAD) ||
	    nla_put_u32(msg, KTCPVS_A_CONNECTIONS, atomic_read(&ktn->nconns)) ||
	    nla_put_u32(msg, KTCPVS_A_ALLOCS, kt_allocs_sum()) ||
	    nla_put_u32(msg, KTCPVS_A_MAX_CONNECTIONS, READ_ONCE(ktn->max_conns)) ||
	    nla_put_u64_64bit(msg, KTCPVS_A_LOG_DROPPED, kt_log_dropped(ktn),
			      KTCPVS_A_PAD))
		err = -EMSGSIZE;
	if (!err && cfg && nla_put_string(msg, KTCPVS_A_SOURCE, cfg->source))
		err = -EMSGSIZE;
	return err;
}

static int kt_nl_get_info(struct sk_buff *skb, struct genl_info *info)
{
	struct kt_net *ktn = kt_net(genl_info_net(info));
	struct sk_buff *msg;
	void *hdr;
	int err;

	msg = nlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;

	hdr = genlmsg_put_reply(msg, info, &kt_genl_family, 0,
				KTCPVS_CMD_GET_INFO);
	if (!hdr) {
		err = -EMSGSIZE;
		goto err_free;
	}

	mutex_lock(&ktn->lock);
	err = kt_fill_info(msg, ktn);
	mutex_unlock(&ktn->lock);
	if (err)
		goto err_free;

	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);

err_free:
	nlmsg_free(msg);
	return err;
}

void kt_txn_free(struct kt_net *ktn)
{
	if (ktn->txn) {
		kt_free(ktn->txn->buf);
		kfree(ktn->txn);
		WRITE_ONCE(ktn->txn, NULL);	/* kt_nl_release peeks */
	}
}

static int kt_nl_flush(struct sk_buff *skb, struct genl_info *info)
{
	struct kt_net *ktn = kt_net(genl_info_net(info));
	int err;

	mutex_lock(&ktn->lock);
	kt_txn_free(ktn);
	err = kt_config_commit(ktn, NULL, NULL, info->extack);
	if (!err)
		kt_notify(ktn, KTCPVS_CMD_FLUSH);
	mutex_unlock(&ktn->lock);
	return err;
}

/* Reply with one attribute: a u32, or a u64 when @wide. */
static int kt_reply_num(struct genl_info *info, u8 cmd, int attr, u64 v,
			bool wide)
{
	struct sk_buff *msg;
	void *hdr;
	int err;

	msg = nlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &kt_genl_family, 0, cmd);
	if (hdr)
		err = wide ? nla_put_u64_64bit(msg, attr, v, KTCPVS_A_PAD) :
			     nla_put_u32(msg, attr, (u32)v);
	if (!hdr || err) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

static int kt_nl_begin(struct sk_buff *skb, struct genl_info *info)
{
	struct kt_net *ktn = kt_net(genl_info_net(info));
	struct kt_txn *t;
	u32 size, id;

	if (GENL_REQ_ATTR_CHECK(info, KTCPVS_A_CONFIG_SIZE))
		return -EINVAL;
	size = nla_get_u32(info->attrs[KTCPVS_A_CONFIG_SIZE]);

	mutex_lock(&ktn->lock);
	if (ktn->txn && ktn->txn->portid != info->snd_portid &&
	    time_before(jiffies, ktn->txn->started + KT_TXN_TIMEOUT)) {
		mutex_unlock(&ktn->lock);
		NL_SET_ERR_MSG(info->extack,
			       "another configuration transaction is open");
		return -EBUSY;
	}
	kt_txn_free(ktn);
	t = kzalloc(sizeof(*t), KT_GFP);
	if (t)
		t->buf = kt_alloc(size);
	if (!t || !t->buf) {
		kfree(t);
		mutex_unlock(&ktn->lock);
		return -ENOMEM;
	}
	t->id = id = ++ktn->next_txn_id;
	t->portid = info->snd_portid;
	t->size = size;
	t->started = jiffies;
	if (info->attrs[KTCPVS_A_SOURCE])
		nla_strscpy(t->source, info->attrs[KTCPVS_A_SOURCE],
			    sizeof(t->source));
	WRITE_ONCE(ktn->txn, t);
	mutex_unlock(&ktn->lock);
	return kt_reply_num(info, KTCPVS_CMD_CONFIG_BEGIN, KTCPVS_A_TXN_ID, id,
			    false);
}

/* The caller's open transaction, or NULL with an error message. */
static struct kt_txn *kt_txn_lookup(struct kt_net *ktn, struct genl_info *info)
{
	struct kt_txn *t = ktn->txn;

	if (GENL_REQ_ATTR_CHECK(info, KTCPVS_A_TXN_ID))
		return NULL;
	if (!t || t->id != nla_get_u32(info->attrs[KTCPVS_A_TXN_ID]) ||
	    t->portid != info->snd_portid) {
		NL_SET_ERR_MSG(info->extack, "no such configuration transaction");
		return NULL;
	}
	return t;
}

static int kt_nl_chunk(struct sk_buff *skb, struct genl_info *info)
{
	struct kt_net *ktn = kt_net(genl_info_net(info));
	struct kt_txn *t;
	u32 off, len;
	int err = -EINVAL;

	if (GENL_REQ_ATTR_CHECK(info, KTCPVS_A_OFFSET) ||
	    GENL_REQ_ATTR_CHECK(info, KTCPVS_A_DATA))
		return -EINVAL;
	off = nla_get_u32(info->attrs[KTCPVS_A_OFFSET]);
	len = nla_len(info->attrs[KTCPVS_A_DATA]);

	mutex_lock(&ktn->lock);
	t = kt_txn_lookup(ktn, info);
	if (!t)
		goto out;
	if (off != t->filled || len > t->size - t->filled) {
		NL_SET_ERR_MSG(info->extack,
			       "chunk out of order or beyond the announced size");
		goto out;
	}
	memcpy(t->buf + off, nla_data(info->attrs[KTCPVS_A_DATA]), len);
	t->filled += len;
	err = 0;
out:
	mutex_unlock(&ktn->lock);
	return err;
}

static int kt_nl_commit(struct sk_buff *skb, struct genl_info *info)
{
	struct kt_net *ktn = kt_net(genl_info_net(info));
	struct kt_config *cfg, *old;
	struct kt_txn *t;
	void *blob;
	u64 gen;
	int err = -EINVAL;

	mutex_lock(&ktn->lock);
	t = kt_txn_lookup(ktn, info);
	if (!t)
		goto out;
	if (t->filled != t->size) {
		NL_SET_ERR_MSG(info->extack, "transaction is missing chunks");
		kt_txn_free(ktn);
		goto out;
	}
	/* The transaction ends here, whatever the outcome. */
	blob = t->buf;
	t->buf = NULL;
	old = rcu_dereference_protected(ktn->cfg, lockdep_is_held(&ktn->lock));
	cfg = kt_config_build(blob, t->size, old, info->extack);
	if (IS_ERR(cfg)) {
		err = PTR_ERR(cfg);
		kt_txn_free(ktn);
		goto out;
	}
	err = kt_config_commit(ktn, cfg, t->source, info->extack);
	kt_txn_free(ktn);
	if (!err)
		kt_notify(ktn, KTCPVS_CMD_CONFIG_COMMIT);
	gen = ktn->generation;
	mutex_unlock(&ktn->lock);
	if (err)
		return err;
	return kt_reply_num(info, KTCPVS_CMD_CONFIG_COMMIT, KTCPVS_A_GENERATION,
			    gen, true);
out:
	mutex_unlock(&ktn->lock);
	return err;
}

static int kt_nl_abort(struct sk_buff *skb, struct genl_info *info)
{
	struct kt_net *ktn = kt_net(genl_info_net(info));
	int err = -EINVAL;

	mutex_lock(&ktn->lock);
	if (kt_txn_lookup(ktn, info)) {
		kt_txn_free(ktn);
		err = 0;
	}
	mutex_unlock(&ktn->lock);
	return err;
}

/* Decode KTCPVS_A_OBJ_ADDR (the kt_put_addr() format). */
static int kt_get_addr(const struct nlattr *nla, union kt_addr *ss)
{
	const u8 *a = nla_data(nla);
	u16 port = (a[2] << 8) | a[3];

	return kt_sockaddr(ss, a[0], &a[4], port);
}

/*
 * Change a running server's weight and/or state without a new
 * configuration: weight 0 quiesces it; drain and down take it out of
 * scheduling while requests in progress finish.
 */
static int kt_nl_server_set(struct sk_buff *skb, struct genl_info *info)
{
	struct kt_net *ktn = kt_net(genl_info_net(info));
	union kt_addr ss;
	struct nlattr *pool_attr;
	struct kt_config *cfg;
	u32 p, i;
	int err = -ENOENT;

	if (GENL_REQ_ATTR_CHECK(info, KTCPVS_A_OBJ_POOL) ||
	    GENL_REQ_ATTR_CHECK(info, KTCPVS_A_OBJ_ADDR))
		return -EINVAL;
	if (!info->attrs[KTCPVS_A_WEIGHT] && !info->attrs[KTCPVS_A_STATE]) {
		NL_SET_ERR_MSG(info->extack, "nothing to change: weight or state");
		return -EINVAL;
	}
	if (kt_get_addr(info->attrs[KTCPVS_A_OBJ_ADDR], &ss) < 0) {
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[KTCPVS_A_OBJ_ADDR],
				    "address family must be 4 or 6");
		return -EINVAL;
	}
	pool_attr = info->attrs[KTCPVS_A_OBJ_POOL];

	mutex_lock(&ktn->lock);
	cfg = rcu_dereference_protected(ktn->cfg, lockdep_is_held(&ktn->lock));
	for (p = 0; cfg && p < cfg->npools; p++) {
		struct kt_pool *pool = &cfg->pools[p];

		if (pool->name_len != nla_len(pool_attr) ||
		    memcmp(pool->name, nla_data(pool_attr), pool->name_len))
			continue;
		for (i = 0; i < pool->nservers; i++) {
			struct kt_server *s = &pool->servers[i];

			if (!kt_addr_equal(&s->addr, &ss))
				continue;
			if (info->attrs[KTCPVS_A_WEIGHT])
				WRITE_ONCE(s->weight,
					   nla_get_u32(info->attrs[KTCPVS_A_WEIGHT]));
			if (info->attrs[KTCPVS_A_STATE])
				WRITE_ONCE(s->state,
					   nla_get_u8(info->attrs[KTCPVS_A_STATE]));
			err = 0;
		}
	}
	if (!err) {
		ktn->generation++;
		kt_notify(ktn, KTCPVS_CMD_SERVER_SET);
	} else {
		NL_SET_ERR_MSG(info->extack, "no such server in that pool");
	}
	mutex_unlock(&ktn->lock);
	return err;
}

/* ---- dumps ---------------------------------------------------------------- */

static int kt_put_addr(struct sk_buff *msg, const union kt_addr *ss)
{
	u8 a[20] = { };

	if (ss->sa.sa_family == AF_INET) {
		const struct sockaddr_in *sin = &ss->in;

		a[0] = KT_MATCH_AF_INET;
		memcpy(&a[2], &sin->sin_port, 2);
		memcpy(&a[4], &sin->sin_addr, 4);
	} else {
		const struct sockaddr_in6 *sin6 = &ss->in6;

		a[0] = KT_MATCH_AF_INET6;
		memcpy(&a[2], &sin6->sin6_port, 2);
		memcpy(&a[4], &sin6->sin6_addr, 16);
	}
	return nla_put(msg, KTCPVS_A_OBJ_ADDR, sizeof(a), a);
}

static int kt_put_stats(struct sk_buff *msg, const struct kt_stats *st)
{
	struct kt_pcpu_stats sum;

	kt_stats_sum(st, &sum);
	if (nla_put_u64_64bit(msg, KTCPVS_A_ST_CONNS, sum.conns, KTCPVS_A_PAD) ||
	    nla_put_u32(msg, KTCPVS_A_ST_ACTIVE, atomic_read(&st->active)) ||
	    nla_put_u64_64bit(msg, KTCPVS_A_ST_REQUESTS, sum.requests,
			      KTCPVS_A_PAD) ||
	    nla_put_u64_64bit(msg, KTCPVS_A_ST_BYTES_IN, sum.bytes_in,
			      KTCPVS_A_PAD) ||
	    nla_put_u64_64bit(msg, KTCPVS_A_ST_BYTES_OUT, sum.bytes_out,
			      KTCPVS_A_PAD) ||
	    nla_put_u64_64bit(msg, KTCPVS_A_ST_SPLICED, sum.spliced,
			      KTCPVS_A_PAD) ||
	    nla_put(msg, KTCPVS_A_ST_ERRORS, sizeof(sum.errors), sum.errors))
		return -EMSGSIZE;
	return 0;
}

/* A checked server's check state, last result and changes. */
static int kt_put_check(struct sk_buff *msg, const struct kt_server *s)
{
	char last[16];

	if (!s->check)
		return 0;
	kt_check_result_name(READ_ONCE(s->check_last), last, sizeof(last));
	if (nla_put_u8(msg, KTCPVS_A_CHECK_STATE, READ_ONCE(s->check_state)) ||
	    (last[0] && nla_put_string(msg, KTCPVS_A_CHECK_LAST, last)) ||
	    nla_put_u64_64bit(msg, KTCPVS_A_CHECK_CHANGES,
			      READ_ONCE(s->check_changes), KTCPVS_A_PAD))
		return -EMSGSIZE;
	return 0;
}

/* Object @i of @cfg: services, then pools, then servers. */
static int kt_fill_obj(struct sk_buff *msg, struct kt_config *cfg, u32 i)
{
	if (i < cfg->nservices) {
		const struct kt_service *s = &cfg->svc[i];

		if (nla_put_u8(msg, KTCPVS_A_OBJ_KIND, KTCPVS_OBJ_SERVICE) ||
		    nla_put(msg, KTCPVS_A_OBJ_NAME, s->name_len, s->name) ||
		    kt_put_addr(msg, &s->addr))
			return -EMSGSIZE;
		return kt_put_stats(msg, s->st);
	}
	i -= cfg->nservices;
	if (i < cfg->npools) {
		const struct kt_pool *p = &cfg->pools[i];

		if (nla_put_u8(msg, KTCPVS_A_OBJ_KIND, KTCPVS_OBJ_POOL) ||
		    nla_put(msg, KTCPVS_A_OBJ_NAME, p->name_len, p->name) ||
		    nla_put_u8(msg, KTCPVS_A_SCHED, p->sched))
			return -EMSGSIZE;
		return kt_put_stats(msg, p->st);
	}
	i -= cfg->npools;
	{
		const struct kt_server *s = &cfg->servers[i];
		const struct kt_pool *p = &cfg->pools[s->pool];

		if (nla_put_u8(msg, KTCPVS_A_OBJ_KIND, KTCPVS_OBJ_SERVER) ||
		    nla_put(msg, KTCPVS_A_OBJ_POOL, p->name_len, p->name) ||
		    kt_put_addr(msg, &s->addr) ||
		    nla_put_u32(msg, KTCPVS_A_WEIGHT, READ_ONCE(s->weight)) ||
		    nla_put_u8(msg, KTCPVS_A_STATE, READ_ONCE(s->state)) ||
		    nla_put_u8(msg, KTCPVS_A_COOLDOWN,
			       time_before(jiffies, READ_ONCE(s->down_until))) ||
		    kt_put_check(msg, s))
			return -EMSGSIZE;
		return kt_put_stats(msg, s->st);
	}
}

/*
 * Tell listeners of the "config" group that server @s of pool @p changed
 * its check state.  Best effort.  Context: the check's work (process).
 */
void kt_notify_check(struct kt_net *ktn, const struct kt_pool *p,
		     const struct kt_server *s)
{
	struct sk_buff *msg;
	void *hdr;

	msg = kt_notify_new(KTCPVS_CMD_CHECK, &hdr);
	if (!msg)
		return;
	if (nla_put_u8(msg, KTCPVS_A_OBJ_KIND, KTCPVS_OBJ_SERVER) ||
	    nla_put(msg, KTCPVS_A_OBJ_POOL, p->name_len, p->name) ||
	    kt_put_addr(msg, &s->addr) || kt_put_check(msg, s)) {
		nlmsg_free(msg);
		return;
	}
	kt_notify_send(ktn, msg, hdr);
}

static int kt_nl_dump_stats(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct kt_net *ktn = kt_net(sock_net(skb->sk));
	struct kt_config *cfg = kt_config_tryget(ktn);
	u32 i = cb->args[0], n;
	int err = 0;

	if (!cfg)
		return 0;
	cb->seq = (u32)cfg->generation;
	n = cfg->nservices + cfg->npools + cfg->nservers;
	for (; i < n; i++) {
		void *hdr = genlmsg_put(skb, NETLINK_CB(cb->skb).portid,
					cb->nlh->nlmsg_seq, &kt_genl_family,
					NLM_F_MULTI, KTCPVS_CMD_GET_STATS);

		if (!hdr)
			break;
		genl_dump_check_consistent(cb, hdr);
		if (kt_fill_obj(skb, cfg, i)) {
			genlmsg_cancel(skb, hdr);
			break;
		}
		genlmsg_end(skb, hdr);
	}
	if (i == cb->args[0] && i < n)
		err = -EMSGSIZE;	/* one object does not fit a message */
	cb->args[0] = i;
	kt_config_put(cfg);
	return err ? err : skb->len;
}

static int kt_nl_dump_config(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct kt_net *ktn = kt_net(sock_net(skb->sk));
	struct kt_config *cfg = kt_config_tryget(ktn);
	u32 off = cb->args[0];
	void *hdr;

	if (!cfg)
		return 0;
	cb->seq = (u32)cfg->generation;
	while (off < cfg->len) {
		/* as much as this message's buffer holds beside the headers */
		int room = skb_tailroom(skb) - 512;
		u32 len;

		if (room < 1024)
			break;
		len = min_t(u32, cfg->len - off, room);
		hdr = genlmsg_put(skb, NETLINK_CB(cb->skb).portid,
				  cb->nlh->nlmsg_seq, &kt_genl_family,
				  NLM_F_MULTI, KTCPVS_CMD_GET_CONFIG);
		if (!hdr)
			break;
		genl_dump_check_consistent(cb, hdr);
		if (nla_put_u32(skb, KTCPVS_A_OFFSET, off) ||
		    nla_put_u32(skb, KTCPVS_A_CONFIG_SIZE, cfg->len) ||
		    nla_put_u64_64bit(skb, KTCPVS_A_GENERATION, cfg->generation,
				      KTCPVS_A_PAD) ||
		    nla_put_string(skb, KTCPVS_A_SOURCE, cfg->source) ||
		    nla_put(skb, KTCPVS_A_DATA, len, (u8 *)cfg->blob + off)) {
			genlmsg_cancel(skb, hdr);
			break;
		}
		genlmsg_end(skb, hdr);
		off += len;
	}
	if (off == cb->args[0] && off < cfg->len) {
		kt_config_put(cfg);
		return -EMSGSIZE;	/* not even one chunk fits: never end silently */
	}
	cb->args[0] = off;
	kt_config_put(cfg);
	return skb->len;
}

/* A client connection with kernel TLS, from its acceptor (kt_tls.c). */
static int kt_nl_tls_adopt(struct sk_buff *skb, struct genl_info *info)
{
	union kt_addr la;

	if (GENL_REQ_ATTR_CHECK(info, KTCPVS_A_FD) ||
	    GENL_REQ_ATTR_CHECK(info, KTCPVS_A_OBJ_ADDR))
		return -EINVAL;
	if (kt_get_addr(info->attrs[KTCPVS_A_OBJ_ADDR], &la) < 0) {
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[KTCPVS_A_OBJ_ADDR],
				    "address family must be 4 or 6");
		return -EINVAL;
	}
	return kt_tls_adopt(kt_net(genl_info_net(info)),
			    nla_get_u32(info->attrs[KTCPVS_A_FD]), &la,
			    info->attrs[KTCPVS_A_TLS_NAMES], info->extack);
}

static const struct genl_ops kt_genl_ops[] = {
	{
		.cmd = KTCPVS_CMD_GET_INFO,
		.doit = kt_nl_get_info,
		.policy = kt_noattr_policy,
		.maxattr = KTCPVS_A_MAX,
		/* readable by any user: versions and counts only */
	},
	{
		.cmd = KTCPVS_CMD_FLUSH,
		.doit = kt_nl_flush,
		.policy = kt_noattr_policy,
		.maxattr = KTCPVS_A_MAX,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = KTCPVS_CMD_CONFIG_BEGIN,
		.doit = kt_nl_begin,
		.policy = kt_begin_policy,
		.maxattr = KTCPVS_A_MAX,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = KTCPVS_CMD_CONFIG_CHUNK,
		.doit = kt_nl_chunk,
		.policy = kt_chunk_policy,
		.maxattr = KTCPVS_A_MAX,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = KTCPVS_CMD_CONFIG_COMMIT,
		.doit = kt_nl_commit,
		.policy = kt_txn_policy,
		.maxattr = KTCPVS_A_MAX,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = KTCPVS_CMD_CONFIG_ABORT,
		.doit = kt_nl_abort,
		.policy = kt_txn_policy,
		.maxattr = KTCPVS_A_MAX,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = KTCPVS_CMD_GET_STATS,
		.dumpit = kt_nl_dump_stats,
		.policy = kt_noattr_policy,
		.maxattr = KTCPVS_A_MAX,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = KTCPVS_CMD_GET_CONFIG,
		.dumpit = kt_nl_dump_config,
		.policy = kt_noattr_policy,
		.maxattr = KTCPVS_A_MAX,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = KTCPVS_CMD_SERVER_SET,
		.doit = kt_nl_server_set,
		.policy = kt_server_policy,
		.maxattr = KTCPVS_A_MAX,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = KTCPVS_CMD_GET_LOG,
		.dumpit = kt_log_dump,
		.policy = kt_noattr_policy,
		.maxattr = KTCPVS_A_MAX,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = KTCPVS_CMD_TLS_ADOPT,
		.doit = kt_nl_tls_adopt,
		.policy = kt_adopt_policy,
		.maxattr = KTCPVS_A_MAX,
		.flags = GENL_UNS_ADMIN_PERM,
	},
};

static struct genl_family kt_genl_family __ro_after_init = {
	.name = KTCPVS_GENL_NAME,
	.version = KTCPVS_GENL_VERSION,
	.maxattr = KTCPVS_A_MAX,
	.netnsok = true,
	.resv_start_op = 0,	/* strict validation of every command */
	.module = THIS_MODULE,
	.ops = kt_genl_ops,
	.n_ops = ARRAY_SIZE(kt_genl_ops),
	.mcgrps = kt_mcgrps,
	.n_mcgrps = ARRAY_SIZE(kt_mcgrps),
};

/*
 * A netlink socket is released (its process closed it, exited or was
 * killed): a configuration transaction it left open goes at once, so the
 * next apply is not refused as busy for KT_TXN_TIMEOUT.  Process context
 * (netlink_release, a blocking notifier chain), for every generic netlink
 * socket of the host: the namespace's lock only when a transaction is open.
 * The socket is held while it lives, so its namespace, and ours in it, are.
 */
static int kt_nl_release(struct notifier_block *nb, unsigned long event,
			 void *ptr)
{
	struct netlink_notify *n = ptr;
	struct kt_net *ktn;

	if (event != NETLINK_URELEASE || n->protocol != NETLINK_GENERIC)
		return NOTIFY_DONE;
	ktn = kt_net(n->net);
	if (!READ_ONCE(ktn->txn))
		return NOTIFY_DONE;
	mutex_lock(&ktn->lock);
	if (ktn->txn && ktn->txn->portid == n->portid)
		kt_txn_free(ktn);
	mutex_unlock(&ktn->lock);
	return NOTIFY_DONE;
}

static struct notifier_block kt_nl_notifier = {
	.notifier_call = kt_nl_release,
};

int kt_netlink_init(void)
{
	int err = netlink_register_notifier(&kt_nl_notifier);

	if (err)
		return err;
	err = genl_register_family(&kt_genl_family);
	if (err)
		netlink_unregister_notifier(&kt_nl_notifier);
	return err;
}

void kt_netlink_exit(void)
{
	down_write(&kt_mc_sem);
	kt_mc_closed = true;
	up_write(&kt_mc_sem);
	genl_unregister_family(&kt_genl_family);
	netlink_unregister_notifier(&kt_nl_notifier);
}

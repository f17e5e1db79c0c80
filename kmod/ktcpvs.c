// SPDX-License-Identifier: GPL-2.0
/*
 * ktcpvs - Kernel TCP Virtual Server: an in-kernel Layer-7 content switch.
 *
 * This file is the module's main file.  It owns the per-network-namespace
 * state and the generic netlink family "ktcpvs" through which l7ctl
 * configures and observes the switch (protocol: uapi/ktcpvs.h,
 * docs/netlink.md).
 *
 * Lock order (outermost first; never take them the other way round):
 *   1. genl_mutex      - held by the genetlink core around every doit/dumpit
 *                        (the family is not parallel_ops)
 *   2. kt_net->lock    - mutex, per namespace: serializes configuration
 *                        changes of that namespace and its pernet exit
 * Nothing here runs in atomic context yet: every path above may sleep.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/mutex.h>
#include <net/genetlink.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>

#include "uapi/ktcpvs.h"

#define KTCPVS_VERSION	"0.1.0"

/* Per network namespace state. */
struct kt_net {
	struct mutex lock;		/* serializes configuration changes */
	u32 nservices;			/* services configured (protected by lock) */
	u64 generation;			/* bumped by every change (protected by lock) */
};

static unsigned int kt_net_id __read_mostly;
static struct genl_family kt_genl_family;

static struct kt_net *kt_net(const struct net *net)
{
	return net_generic(net, kt_net_id);
}

/* ---- generic netlink ---------------------------------------------------- */

/* Commands that take no attributes refuse every attribute. */
static const struct nla_policy kt_noattr_policy[KTCPVS_A_MAX + 1] = {
	[0 ... KTCPVS_A_MAX] = { .type = NLA_REJECT },
};

static int kt_fill_info(struct sk_buff *msg, struct kt_net *ktn)
{
	if (nla_put_string(msg, KTCPVS_A_MODULE_VERSION, KTCPVS_VERSION) ||
	    nla_put_u32(msg, KTCPVS_A_PROTO_VERSION, KTCPVS_PROTO_VERSION) ||
	    nla_put_u32(msg, KTCPVS_A_SERVICE_COUNT, ktn->nservices) ||
	    nla_put_u64_64bit(msg, KTCPVS_A_GENERATION, ktn->generation,
			      KTCPVS_A_UNSPEC))
		return -EMSGSIZE;
	return 0;
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

/* Drop the namespace's configuration; the caller holds ktn->lock. */
static void kt_net_flush_locked(struct kt_net *ktn)
{
	lockdep_assert_held(&ktn->lock);
	ktn->nservices = 0;
	ktn->generation++;
}

static int kt_nl_flush(struct sk_buff *skb, struct genl_info *info)
{
	struct kt_net *ktn = kt_net(genl_info_net(info));

	mutex_lock(&ktn->lock);
	kt_net_flush_locked(ktn);
	mutex_unlock(&ktn->lock);
	return 0;
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
};

/* ---- per network namespace ---------------------------------------------- */

static int __net_init kt_net_init(struct net *net)
{
	struct kt_net *ktn = kt_net(net);

	mutex_init(&ktn->lock);
	ktn->nservices = 0;
	ktn->generation = 0;
	return 0;
}

/*
 * Kernel sockets do not pin their namespace, so everything of a namespace
 * must be closed here, not left to the module's exit.
 */
static void __net_exit kt_net_exit(struct net *net)
{
	struct kt_net *ktn = kt_net(net);

	mutex_lock(&ktn->lock);
	kt_net_flush_locked(ktn);
	mutex_unlock(&ktn->lock);
	mutex_destroy(&ktn->lock);
}

static struct pernet_operations kt_net_ops = {
	.init = kt_net_init,
	.exit = kt_net_exit,
	.id = &kt_net_id,
	.size = sizeof(struct kt_net),
};

/* ---- module ------------------------------------------------------------- */

static int __init ktcpvs_init(void)
{
	int err;

	err = register_pernet_subsys(&kt_net_ops);
	if (err)
		return err;

	err = genl_register_family(&kt_genl_family);
	if (err)
		goto err_pernet;

	pr_info("version %s loaded (netlink protocol %u)\n", KTCPVS_VERSION,
		KTCPVS_PROTO_VERSION);
	return 0;

err_pernet:
	unregister_pernet_subsys(&kt_net_ops);
	return err;
}

static void __exit ktcpvs_exit(void)
{
	/* No new requests once the family is gone; then drop every namespace. */
	genl_unregister_family(&kt_genl_family);
	unregister_pernet_subsys(&kt_net_ops);
	pr_info("unloaded\n");
}

module_init(ktcpvs_init);
module_exit(ktcpvs_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("The KTCPVS developers");
MODULE_DESCRIPTION("KTCPVS: in-kernel Layer-7 content switch");
MODULE_VERSION(KTCPVS_VERSION);
MODULE_ALIAS_GENL_FAMILY(KTCPVS_GENL_NAME);

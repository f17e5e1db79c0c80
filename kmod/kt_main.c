// SPDX-License-Identifier: GPL-2.0
/*
 * ktcpvs - Kernel TCP Virtual Server: an in-kernel Layer-7 content switch.
 *
 * kt_main.c - the module and its namespaces: init and exit, the state of
 * each network namespace, and the accounting of allocations and of the
 * objects that hold a namespace's sockets.
 *
 * Where to read on: kt.h (object model, locking), kt_conn.h (the life of
 * a request), kt_netlink.c (the netlink family), docs/datapath.md.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>

#include "uapi/ktcpvs.h"
#include "kt_conn.h"

static unsigned int kt_net_id __read_mostly;
struct workqueue_struct *kt_wq;
DEFINE_PER_CPU(int, kt_allocs);

/*
 * Serve a connection from its socket callbacks: its steps run in a tasklet
 * (softirq) whenever they can, in its work item when they cannot
 * (kt_conn.c).  Off: every step runs in the work item, as before.  May be
 * changed at any time; a connection's next event follows the new value.
 */
bool kt_fastpath = true;
module_param_named(fastpath, kt_fastpath, bool, 0644);
MODULE_PARM_DESC(fastpath, "run data path steps in softirq when possible (default: on)");

struct kt_net *kt_net(const struct net *net)
{
	return net_generic(net, kt_net_id);
}

/* ---- allocation accounting ---------------------------------------------------- */

int kt_allocs_sum(void)
{
	int cpu, sum = 0;

	for_each_possible_cpu(cpu)
		sum += per_cpu(kt_allocs, cpu);
	return sum;
}

void *kt_alloc(size_t size)
{
	void *p = kvzalloc(size, KT_GFP);

	if (p)
		kt_alloc_inc();
	return p;
}

void kt_free(void *p)
{
	if (p) {
		kvfree(p);
		kt_alloc_dec();
	}
}

/* ---- objects that hold a namespace's sockets -------------------------------------- */

/* One more object of @ktn; false once the namespace is going. */
bool kt_net_obj_get(struct kt_net *ktn)
{
	bool ok;

	spin_lock_bh(&ktn->conns_lock);
	ok = !ktn->dying;
	if (ok)
		ktn->nobjs++;
	spin_unlock_bh(&ktn->conns_lock);
	return ok;
}

/*
 * One object fewer.  The wake-up happens under the lock the exit's test
 * takes, so once the exit sees none left, nothing touches @ktn any more.
 */
void kt_net_obj_put(struct kt_net *ktn)
{
	spin_lock_bh(&ktn->conns_lock);
	if (!--ktn->nobjs)
		wake_up(&ktn->objs_wait);
	spin_unlock_bh(&ktn->conns_lock);
}

static bool kt_net_objs_gone(struct kt_net *ktn)
{
	bool gone;

	spin_lock_bh(&ktn->conns_lock);
	gone = !ktn->nobjs;
	spin_unlock_bh(&ktn->conns_lock);
	return gone;
}

/* ---- per network namespace ------------------------------------------------------- */

static int __net_init kt_net_init(struct net *net)
{
	struct kt_net *ktn = kt_net(net);

	ktn->net = net;
	mutex_init(&ktn->lock);
	RCU_INIT_POINTER(ktn->cfg, NULL);
	INIT_LIST_HEAD(&ktn->listeners);
	spin_lock_init(&ktn->conns_lock);
	INIT_LIST_HEAD(&ktn->conns);
	atomic_set(&ktn->nconns, 0);
	init_waitqueue_head(&ktn->objs_wait);
	spin_lock_init(&ktn->listen_lock);
	INIT_LIST_HEAD(&ktn->listen_wait);
	kt_log_init(ktn);
	return 0;
}

/*
 * Kernel sockets do not pin their namespace, so everything of a namespace
 * is closed here: listeners and idle backend connections (the flush), then
 * every connection, waiting until the last object holding one of its
 * sockets is gone.  The access log goes last: connections log as they end.
 */
static void __net_exit kt_net_exit(struct net *net)
{
	struct kt_net *ktn = kt_net(net);

	mutex_lock(&ktn->lock);
	kt_txn_free(ktn);
	kt_config_commit(ktn, NULL, NULL, NULL);
	mutex_unlock(&ktn->lock);

	spin_lock_bh(&ktn->conns_lock);
	ktn->dying = true;
	spin_unlock_bh(&ktn->conns_lock);
	kt_conns_kill(ktn, NULL);
	wait_event(ktn->objs_wait, kt_net_objs_gone(ktn));
	kt_log_exit(ktn);
	kt_srctab_exit(ktn);
	mutex_destroy(&ktn->lock);
}

static struct pernet_operations kt_net_ops = {
	.init = kt_net_init,
	.exit = kt_net_exit,
	.id = &kt_net_id,
	.size = sizeof(struct kt_net),
};

/* ---- module ----------------------------------------------------------------------- */

static int __init ktcpvs_init(void)
{
	int err;

	err = kt_conn_cache_init();
	if (err)
		return err;
	kt_wq = alloc_workqueue("ktcpvs", WQ_MEM_RECLAIM | WQ_PERCPU, 0);
	if (!kt_wq) {
		err = -ENOMEM;
		goto err_cache;
	}
	err = kt_check_wq_init();
	if (err)
		goto err_wq;
	err = register_pernet_subsys(&kt_net_ops);
	if (err)
		goto err_check;
	err = kt_netlink_init();
	if (err)
		goto err_pernet;
	pr_info("version %s loaded (netlink protocol %u)\n", KTCPVS_VERSION,
		KTCPVS_PROTO_VERSION);
	return 0;

err_pernet:
	unregister_pernet_subsys(&kt_net_ops);
err_check:
	kt_check_wq_exit();
err_wq:
	destroy_workqueue(kt_wq);
err_cache:
	kt_conn_cache_exit();
	return err;
}

static void __exit ktcpvs_exit(void)
{
	/*
	 * The access log's pending batches go out while the family exists; no
	 * new requests once it is gone; then drop every namespace.
	 */
	kt_log_flush_all();
	kt_netlink_exit();
	unregister_pernet_subsys(&kt_net_ops);	/* stops every check */
	kt_check_wq_exit();
	destroy_workqueue(kt_wq);	/* drains the last release works */
	rcu_barrier();			/* retired configurations' last callbacks */
	kt_io_exit();			/* after the last tasklet (release works) */
	kt_conn_cache_exit();
	if (kt_allocs_sum())
		pr_err("%d allocations leaked\n", kt_allocs_sum());
	pr_info("unloaded\n");
}

module_init(ktcpvs_init);
module_exit(ktcpvs_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("The KTCPVS developers");
MODULE_DESCRIPTION("KTCPVS: in-kernel Layer-7 content switch");
MODULE_VERSION(KTCPVS_VERSION);
MODULE_ALIAS_GENL_FAMILY(KTCPVS_GENL_NAME);

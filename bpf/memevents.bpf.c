// SPDX-License-Identifier: Apache-2.0
/*
 * memevents.bpf.c  Memory events of agentshim-managed cgroups, as they happen.  (BCC)
 *
 * agentshimd watches each managed container by putting the fd of its cgroup v2 directory
 * into a slot of the `watched` cgroup array. Every program below first asks: is the current
 * task inside (at any depth) one of the watched cgroups? The answer depends only on the
 * task's leaf cgroup, so it is cached per leaf cgroup id in `cgstate`, tagged with a
 * generation number that user space bumps on every watch/unwatch. Each event carries the
 * current task's leaf cgroup id (bpf_get_current_cgroup_id), so the daemon can tell which
 * tools/call-N it came from, and the slot of the container.
 *
 * The cache is keyed by (cgroup id, event type) and also holds that type's aggregation
 * state, so the hot path (one charge) costs a single hash lookup.
 *
 * Which hooks exist is decided in user space (agentshim/bpf/hooks.py) and passed in as
 * -D defines; nothing here assumes a kernel version. The kernel headers BCC compiles with
 * may not match the running kernel, so no kernel struct is ever dereferenced: only helpers,
 * tracepoint fields (BCC reads their layout from the running kernel's tracefs) and kprobe
 * arguments taken as plain values.
 *
 * Events (struct memevent, `type`):
 *   CHARGE   memory charged to the cgroup (aggregated): memcg:count_memcg_events PGPGIN,
 *            or kprobe try_charge_memcg. value = bytes.
 *   HIGH     memory.high breached: memcg reclaim begun inside memory.high handling
 *            (kprobe+kretprobe on mem_cgroup_handle_over_high, which 6.1 calls on every
 *            return to user with TIF_NOTIFY_RESUME, over high or not); duration = time the
 *            handlings took (reclaim + penalty sleep). count matches memory.events "high".
 *   MAX      a charge hit a hard limit: memcg direct reclaim begun by the charging task
 *            (vmscan:mm_vmscan_memcg_reclaim_begin) outside memory.high handling. count
 *            matches memory.events "max" (v1 memory.failcnt, which also counts failed
 *            batch charges retried without reclaim, is an upper bound).
 *   RECLAIM  memcg reclaim done (begin..end, in the task): value = bytes reclaimed,
 *            duration = time spent reclaiming.
 *   OOM      oom:mark_victim (pid/comm of the victim, value = its rss in bytes), or kprobe
 *            mem_cgroup_out_of_memory (the task that invoked the memcg OOM killer).
 *   EXEC     sched:sched_process_exec: pid, comm, filename.
 *   EXIT     sched:sched_process_exit of a thread group leader: pid, comm.
 * CHARGE, HIGH, MAX, RECLAIM and kprobe OOM fire up to once per page charged, so they are
 * aggregated per cgroup: at most one event per cgroup and type every RATE_NS; `count`,
 * `value` and `duration_ns` sum everything folded into it. The first occurrence after a
 * quiet period is sent at once, so the daemon learns of a burst without delay.
 */
#include <uapi/linux/ptrace.h>

#ifndef MAX_SLOTS
#define MAX_SLOTS 64
#endif
#ifndef RATE_NS
#define RATE_NS 10000000ULL
#endif
#ifndef PAGE_BYTES
#define PAGE_BYTES 4096
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 64
#endif
#ifndef ITEM_PGPGIN
#define ITEM_PGPGIN 0
#endif
#define COMM_LEN 16
#define FILENAME_LEN 128
/* a memory.high handling whose return we never saw is forgotten after this long */
#define STALE_NS 5000000000ULL

/* Event types (EV_*) and sources (SRC_*) are defined once, in agentshim/bpf/loader.py
 * (EventType, Source), and passed in as -D flags by the loader. */
#if !defined(EV_HIGH) || !defined(EV_CHARGE) || !defined(SRC_TP_EXEC) || !defined(SRC_KP_MEMCG_OOM)
#error "EV_* and SRC_* come from agentshim/bpf/loader.py constant_cflags(); load this file through it"
#endif

struct memevent {
    u32 type;
    u32 pid;            /* tgid; for OOM from mark_victim: the victim */
    u64 cgroup_id;      /* leaf cgroup v2 id of the current task */
    u64 ts_ns;          /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
    u64 value;          /* bytes (see the type) */
    u64 duration_ns;
    u32 count;          /* occurrences folded into this event */
    u16 source;
    u16 slot;           /* watched slot (container) the cgroup is under */
    char comm[COMM_LEN];
    char filename[FILENAME_LEN];
};

struct cgkey {
    u64 cgroup_id;
    u32 type;
    u32 pad;
};

/* Per (leaf cgroup, event type): is it watched, and the aggregation of that type. */
struct cgstate {
    u64 gen_slot;       /* generation << 32 | (slot + 1); slot + 1 == 0: not watched */
    u64 last_emit;      /* when the last event of this type went out */
    u64 last_seen;      /* when the last occurrence was folded in */
    u64 count;          /* occurrences not sent yet */
    u64 value;
    u64 dur;
};

BPF_CGROUP_ARRAY(watched, MAX_SLOTS);
BPF_ARRAY(generation, u64, 1);
BPF_ARRAY(blank_state, struct cgstate, 1);      /* all zeroes, the initial cgstate */
BPF_TABLE("lru_hash", struct cgkey, struct cgstate, cgstate, 32768);
BPF_HASH(reclaim_start, u64, u64, 16384);       /* pid_tgid -> reclaim begin ts */
#ifdef USE_KPROBE_OVER_HIGH
struct hstate {
    u64 ts;             /* entry of mem_cgroup_handle_over_high */
    u64 hit;            /* a reclaim ran inside: the task really was over memory.high */
};
BPF_HASH(high_start, u64, struct hstate, 16384);    /* pid_tgid -> memory.high handling */
#endif

#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif

static __always_inline void emit(void *ctx, struct memevent *e)
{
#ifdef USE_RINGBUF
    events.ringbuf_output(e, sizeof(*e), 0);
#else
    events.perf_submit(ctx, e, sizeof(*e));
#endif
}

/* The state of (current task's leaf cgroup, type) if the task is under a watched cgroup,
 * else NULL. */
static __always_inline struct cgstate *watched_state(u64 cgid, u32 type)
{
    u32 zero = 0;
    u64 *gen = generation.lookup(&zero);
    if (!gen)
        return 0;
    struct cgkey key = {.cgroup_id = cgid, .type = type};
    struct cgstate *st = cgstate.lookup(&key);
    if (!st) {
        struct cgstate *blank = blank_state.lookup(&zero);
        if (!blank)
            return 0;
        cgstate.insert(&key, blank);
        st = cgstate.lookup(&key);
        if (!st)
            return 0;
    }
    u64 gs = st->gen_slot;
    if ((gs >> 32) != (*gen & 0xffffffff)) {
        u64 slot1 = 0;
        for (int i = 0; i < MAX_SLOTS; i++) {
            if (watched.check_current_task(i) == 1) {
                slot1 = i + 1;
                break;
            }
        }
        gs = (*gen << 32) | slot1;
        st->gen_slot = gs;
    }
    if ((gs & 0xffffffff) == 0)
        return 0;
    return st;
}

static __always_inline u16 slot_of(struct cgstate *st)
{
    return (u16)((st->gen_slot & 0xffffffff) - 1);
}

static __always_inline void fill(struct memevent *e, u32 type, u16 source, struct cgstate *st,
                                 u64 cgid, u64 now)
{
    e->type = type;
    e->source = source;
    e->slot = slot_of(st);
    e->cgroup_id = cgid;
    e->ts_ns = now;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->count = 1;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

/*
 * Fold one occurrence into the aggregation `a` of (cgroup, type); send an event carrying the
 * sums when the last one went out RATE_NS ago or more. Races between CPUs can at worst send
 * two events in one period; no occurrence is lost (sums are taken with fetch-and-add of the
 * negated value read). User space sends what is left when a cgroup falls quiet.
 */
static __always_inline void aggregate(void *ctx, struct cgstate *a, u32 type, u16 source,
                                      u64 cgid, u64 value, u64 dur, u64 now)
{
    __sync_fetch_and_add(&a->count, 1);
    if (value)
        __sync_fetch_and_add(&a->value, value);
    if (dur)
        __sync_fetch_and_add(&a->dur, dur);
    a->last_seen = now;
    if (now - a->last_emit < RATE_NS)
        return;
    a->last_emit = now;
    u64 c = a->count, v = a->value, d = a->dur;
    __sync_fetch_and_add(&a->count, -c);
    __sync_fetch_and_add(&a->value, -v);
    __sync_fetch_and_add(&a->dur, -d);

    struct memevent e = {};
    fill(&e, type, source, a, cgid, now);
    e.count = c;
    e.value = v;
    e.duration_ns = d;
    emit(ctx, &e);
}

/* ---- EXEC / EXIT: which command runs in which call ----------------------------------- */

#ifdef HAVE_TP_SCHED_EXEC
int ashim_exec(struct tracepoint__sched__sched_process_exec *args)
{
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgstate *st = watched_state(cgid, EV_EXEC);
    if (!st)
        return 0;
    struct memevent e = {};
    fill(&e, EV_EXEC, SRC_TP_EXEC, st, cgid, bpf_ktime_get_ns());
#ifdef HAVE_EXEC_FILENAME
    unsigned short off = args->data_loc_filename & 0xffff;
    bpf_probe_read_kernel_str(&e.filename, sizeof(e.filename), (void *)args + off);
#endif
    emit(args, &e);
    return 0;
}
#endif

#ifdef HAVE_TP_SCHED_EXIT
int ashim_exit(struct tracepoint__sched__sched_process_exit *args)
{
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id != (u32)(id >> 32))
        return 0;                       /* a thread, not the process */
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgstate *st = watched_state(cgid, EV_EXIT);
    if (!st)
        return 0;
    struct memevent e = {};
    fill(&e, EV_EXIT, SRC_TP_EXIT, st, cgid, bpf_ktime_get_ns());
    emit(args, &e);
    return 0;
}
#endif

/* ---- CHARGE: memory charged, aggregated ---------------------------------------------- */

#ifdef HAVE_TP_MEMCG_COUNT_EVENTS
int ashim_charge(struct tracepoint__memcg__count_memcg_events *args)
{
    if (args->item != ITEM_PGPGIN)
        return 0;
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgstate *st = watched_state(cgid, EV_CHARGE);
    if (!st)
        return 0;
    aggregate(args, st, EV_CHARGE, SRC_TP_MEMCG_EVENTS, cgid,
              (u64)args->val * PAGE_BYTES, 0, bpf_ktime_get_ns());
    return 0;
}
#endif

#ifdef USE_KPROBE_TRY_CHARGE
/* try_charge_memcg(struct mem_cgroup *memcg, gfp_t gfp_mask, unsigned int nr_pages) */
int ashim_kp_charge(struct pt_regs *ctx)
{
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgstate *st = watched_state(cgid, EV_CHARGE);
    if (!st)
        return 0;
    u64 nr_pages = PT_REGS_PARM3(ctx) & 0xffffffff;
    aggregate(ctx, st, EV_CHARGE, SRC_KP_TRY_CHARGE, cgid,
              nr_pages * PAGE_BYTES, 0, bpf_ktime_get_ns());
    return 0;
}
#endif

/* ---- HIGH: memory.high handling (reclaim + penalty sleep) on return to user ----------- */

#ifdef USE_KPROBE_OVER_HIGH
int ashim_kp_high(struct pt_regs *ctx)
{
    u64 cgid = bpf_get_current_cgroup_id();
    if (!watched_state(cgid, EV_HIGH))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct hstate h = {.ts = bpf_ktime_get_ns()};
    high_start.update(&id, &h);
    return 0;
}

int ashim_kr_high(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    struct hstate *h = high_start.lookup(&id);
    if (!h)
        return 0;
    u64 dur = bpf_ktime_get_ns() - h->ts;
    u64 hit = h->hit;
    high_start.delete(&id);
    if (!hit)
        return 0;                       /* not over memory.high: nothing happened */
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgstate *st = watched_state(cgid, EV_HIGH);
    if (st)
        __sync_fetch_and_add(&st->dur, dur);    /* sent with the next HIGH event */
    return 0;
}
#endif

/* ---- MAX and RECLAIM: memcg direct reclaim in the charging task ----------------------- */

#ifdef HAVE_TP_VMSCAN_MEMCG_RECLAIM
int ashim_rclm_begin(struct tracepoint__vmscan__mm_vmscan_memcg_reclaim_begin *args)
{
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgstate *st = watched_state(cgid, EV_MAX);
    if (!st)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    reclaim_start.update(&id, &now);
#ifdef USE_KPROBE_OVER_HIGH
    struct hstate *h = high_start.lookup(&id);
    if (h && now - h->ts < STALE_NS) {
        /* reclaim inside memory.high handling: the breach (one per memory.events "high") */
        h->hit = 1;
        struct cgstate *hs = watched_state(cgid, EV_HIGH);
        if (hs)
            aggregate(args, hs, EV_HIGH, SRC_KP_OVER_HIGH, cgid, 0, 0, now);
        return 0;
    }
#endif
    /* Outside memory.high handling, a memcg reclaim run by the task itself is its charge
     * finding the cgroup (or an ancestor) at its limit: memory.max / limit_in_bytes. */
    aggregate(args, st, EV_MAX, SRC_TP_RECLAIM_BEGIN, cgid, 0, 0, now);
    return 0;
}

int ashim_rclm_end(struct tracepoint__vmscan__mm_vmscan_memcg_reclaim_end *args)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 *start = reclaim_start.lookup(&id);
    if (!start)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 dur = now - *start;
    reclaim_start.delete(&id);
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgstate *st = watched_state(cgid, EV_RECLAIM);
    if (!st)
        return 0;
    aggregate(args, st, EV_RECLAIM, SRC_TP_RECLAIM, cgid,
              (u64)args->nr_reclaimed * PAGE_BYTES, dur, now);
    return 0;
}
#endif

/* ---- OOM -------------------------------------------------------------------------------- */

#ifdef HAVE_TP_OOM_MARK_VICTIM
/* Runs in the task that invoked the OOM killer; the fields describe the victim. */
int ashim_oom_victim(struct tracepoint__oom__mark_victim *args)
{
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgstate *st = watched_state(cgid, EV_OOM);
    if (!st)
        return 0;
    struct memevent e = {};
    fill(&e, EV_OOM, SRC_TP_MARK_VICTIM, st, cgid, bpf_ktime_get_ns());
    e.pid = args->pid;
#ifdef HAVE_MARK_VICTIM_COMM
    unsigned short off = args->data_loc_comm & 0xffff;
    bpf_probe_read_kernel_str(&e.comm, sizeof(e.comm), (void *)args + off);
#else
    __builtin_memset(&e.comm, 0, sizeof(e.comm));   /* the invoker's comm would mislead */
#endif
#ifdef HAVE_MARK_VICTIM_RSS
    e.value = ((u64)args->anon_rss + args->file_rss + args->shmem_rss) * 1024;
#endif
    emit(args, &e);
    return 0;
}
#endif

#ifdef USE_KPROBE_MEMCG_OOM
/* mem_cgroup_out_of_memory(struct mem_cgroup *memcg, gfp_t gfp_mask, int order) */
int ashim_kp_oom(struct pt_regs *ctx)
{
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgstate *st = watched_state(cgid, EV_OOM);
    if (!st)
        return 0;
    aggregate(ctx, st, EV_OOM, SRC_KP_MEMCG_OOM, cgid, 0, 0,
              bpf_ktime_get_ns());
    return 0;
}
#endif

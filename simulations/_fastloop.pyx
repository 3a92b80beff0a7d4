# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The simulation loop and the adversary's pools in C: the same events, draws and float operations,
in the same order, as :meth:`simulations.engine.Simulation._run_python` and
:class:`simulations.adversary.Adversary`, so a run gives byte-identical JSON either way.

Why hand-written C data and not the Python objects: at the defaults 43 % of the pure-Python time
is the adversary's dict arithmetic and most of the rest is creating packet objects and tuples;
here a packet is a slot in flat arrays, an event a struct in a binary heap, a pool a dense row.
Randomness still comes from the run's ``random.Random`` (one Python call per draw), so the draw
stream is the very one the policy functions consume. ``--crypto`` runs use the Python loop.
"""

from libc.math cimport log, log2, nearbyint
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

from simulations.adversary import DONE, EPSILON, conclude

#: Which model this build implements; the engine runs a build only if it expects the same one
#: (2: issue 15's cover scheme, ACKs out of the recipient view). Raise it with every model change.
MODEL = 2

cdef int _DEPART = 0, _ARRIVE = 1, _WRITE = 2, _PAYLOAD = 3, _LOOP = 4, _DROP = 5, _MIX_LOOP = 6
cdef int REAL = 0, LOOP = 1, DROP = 2, MIX_LOOP = 3, ACK = 4
cdef double MAX_DELAY_MS = 4294967295.0


cdef struct Event:
    double t
    long long seq
    int kind
    int idx


cdef inline bint _before(Event* a, Event* b) noexcept nogil:
    return a.t < b.t or (a.t == b.t and a.seq < b.seq)


cdef void* _grow(void* ptr, Py_ssize_t count, Py_ssize_t size) except NULL:
    cdef void* p = realloc(ptr, count * size)
    if p == NULL:
        raise MemoryError(f"simulator: cannot grow an array to {count * size} bytes")
    return p


cdef class Loop:
    """One run's state in flat arrays; :meth:`run` fills the Simulation's counters."""

    # event heap
    cdef Event* heap
    cdef Py_ssize_t heap_n, heap_cap
    cdef long long seq
    # packets: slot i has route[i*R : i*R+R], delays likewise
    cdef int R
    cdef int* route
    cdef double* delays
    cdef int* plen
    cdef int* ppos
    cdef int* pkind
    cdef int* pdest
    cdef int* porigin  # client index (mix index for MIX_LOOP)
    cdef long long* pmsg
    cdef int* ptid
    cdef int* mass_n  # -1: no mass
    cdef int** mass_tid
    cdef double** mass_v
    cdef int* free_slots
    cdef Py_ssize_t n_free, slots_cap
    # messages
    cdef double* m_written
    cdef double* m_delivered
    cdef int* m_left
    cdef int* m_sent
    cdef int* m_sender
    cdef int* m_recipient
    cdef Py_ssize_t n_msgs, msgs_cap
    # network
    cdef int L, n_mixes, n_providers, n_clients, S
    cdef int* layer_nodes  # L * per-layer
    cdef int* layer_size
    cdef int* layer_start
    cdef int* provider_nodes
    cdef int* layer_of
    cdef char* tracked
    cdef char* last_layer
    cdef int* count
    cdef double hop_lambd, prov_lambd, link
    # adversary: pools are dense rows of S; targets are arrays of S
    cdef double* pool_v
    cdef int* pool_list
    cdef int* pool_n
    cdef char* pool_has
    cdef int n_targets
    cdef double* t_out
    cdef double* t_volume
    cdef double* t_vlogv
    cdef long long* t_exits
    cdef double* t_trunc
    cdef double* t_sent_at
    cdef char* t_done
    cdef char* t_own_out
    cdef int* t_recipient
    cdef list by_dest
    cdef list results
    cdef object rng_random, rng_randrange
    cdef long long sent[5]
    cdef long long delivered[5]
    cdef int kinds  # 5 with ACKs (cover_scheme "acks"), else 4
    cdef bint cover_acks


    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.mass_n != NULL:
            for i in range(self.slots_cap):
                if self.mass_n[i] >= 0:
                    free(self.mass_tid[i])
                    free(self.mass_v[i])
        free(self.heap)
        free(self.route)
        free(self.delays)
        free(self.plen)
        free(self.ppos)
        free(self.pkind)
        free(self.pdest)
        free(self.porigin)
        free(self.pmsg)
        free(self.ptid)
        free(self.mass_n)
        free(self.mass_tid)
        free(self.mass_v)
        free(self.free_slots)
        free(self.m_written)
        free(self.m_delivered)
        free(self.m_left)
        free(self.m_sent)
        free(self.m_sender)
        free(self.m_recipient)
        free(self.layer_nodes)
        free(self.layer_size)
        free(self.layer_start)
        free(self.provider_nodes)
        free(self.layer_of)
        free(self.tracked)
        free(self.last_layer)
        free(self.count)
        free(self.pool_v)
        free(self.pool_list)
        free(self.pool_n)
        free(self.pool_has)
        free(self.t_out)
        free(self.t_volume)
        free(self.t_vlogv)
        free(self.t_exits)
        free(self.t_trunc)
        free(self.t_sent_at)
        free(self.t_done)
        free(self.t_own_out)
        free(self.t_recipient)

    def __init__(self, sim):
        cfg = sim.config
        cdef int i, j, n
        self.L = len(sim.layer_nodes)
        self.R = self.L + 2
        self.n_mixes = sim.n_mixes
        self.n_providers = len(sim.provider_nodes)
        self.n_clients = cfg.clients
        self.S = cfg.entropy_samples
        self.hop_lambd = 1.0 / cfg.delay_mean if cfg.delay_mean > 0 else 0.0
        self.prov_lambd = 1.0 / cfg.provider_delay if cfg.provider_delay > 0 else 0.0
        self.link = cfg.link_latency
        self.cover_acks = cfg.cover_acks
        self.kinds = 5 if cfg.cover_acks else 4
        self.rng_random = sim.rng.random
        self.rng_randrange = sim.rng.randrange
        n = sum(len(g) for g in sim.layer_nodes)
        self.layer_nodes = <int*>_grow(NULL, n, sizeof(int))
        self.layer_size = <int*>_grow(NULL, self.L, sizeof(int))
        self.layer_start = <int*>_grow(NULL, self.L, sizeof(int))
        j = 0
        for i in range(self.L):
            group = sim.layer_nodes[i]
            self.layer_start[i] = j
            self.layer_size[i] = len(group)
            for node in group:
                self.layer_nodes[j] = node
                j += 1
        self.provider_nodes = <int*>_grow(NULL, self.n_providers, sizeof(int))
        for i in range(self.n_providers):
            self.provider_nodes[i] = sim.provider_nodes[i]
        n = self.n_mixes + self.n_providers
        self.layer_of = <int*>_grow(NULL, n, sizeof(int))
        self.tracked = <char*>_grow(NULL, n, 1)
        self.last_layer = <char*>_grow(NULL, n, 1)
        self.count = <int*>_grow(NULL, n, sizeof(int))
        adv = sim.adversary
        for i in range(n):
            self.layer_of[i] = sim.layer_of[i]
            self.tracked[i] = adv.tracked[i]
            self.last_layer[i] = adv.last_layer[i]
            self.count[i] = 0
        cdef int S = self.S if self.S > 0 else 1
        self.pool_v = <double*>_grow(NULL, <Py_ssize_t>self.n_mixes * S, sizeof(double))
        self.pool_list = <int*>_grow(NULL, <Py_ssize_t>self.n_mixes * S, sizeof(int))
        self.pool_has = <char*>_grow(NULL, <Py_ssize_t>self.n_mixes * S, 1)
        self.pool_n = <int*>_grow(NULL, self.n_mixes, sizeof(int))
        memset(self.pool_has, 0, <Py_ssize_t>self.n_mixes * S)
        memset(self.pool_n, 0, self.n_mixes * sizeof(int))
        self.t_out = <double*>_grow(NULL, S, sizeof(double))
        self.t_volume = <double*>_grow(NULL, S, sizeof(double))
        self.t_vlogv = <double*>_grow(NULL, S, sizeof(double))
        self.t_exits = <long long*>_grow(NULL, S, sizeof(long long))
        self.t_trunc = <double*>_grow(NULL, S, sizeof(double))
        self.t_sent_at = <double*>_grow(NULL, S, sizeof(double))
        self.t_done = <char*>_grow(NULL, S, 1)
        self.t_own_out = <char*>_grow(NULL, S, 1)
        self.t_recipient = <int*>_grow(NULL, S, sizeof(int))
        self.n_targets = 0
        self.by_dest = []
        self.results = []
        self.heap_cap = 1024
        self.heap = <Event*>_grow(NULL, self.heap_cap, sizeof(Event))
        self.heap_n = 0
        self.seq = 0
        self.slots_cap = 0
        self.n_free = 0
        self._grow_slots(1024)
        self.msgs_cap = 0
        self.n_msgs = 0
        self._grow_msgs(1024)
        for i in range(5):
            self.sent[i] = 0
            self.delivered[i] = 0

    # ------------------------------------------------------------------ storage

    cdef int _grow_slots(self, Py_ssize_t cap) except -1:
        cdef Py_ssize_t i, old = self.slots_cap
        self.route = <int*>_grow(self.route, cap * self.R, sizeof(int))
        self.delays = <double*>_grow(self.delays, cap * self.R, sizeof(double))
        self.plen = <int*>_grow(self.plen, cap, sizeof(int))
        self.ppos = <int*>_grow(self.ppos, cap, sizeof(int))
        self.pkind = <int*>_grow(self.pkind, cap, sizeof(int))
        self.pdest = <int*>_grow(self.pdest, cap, sizeof(int))
        self.porigin = <int*>_grow(self.porigin, cap, sizeof(int))
        self.pmsg = <long long*>_grow(self.pmsg, cap, sizeof(long long))
        self.ptid = <int*>_grow(self.ptid, cap, sizeof(int))
        self.mass_n = <int*>_grow(self.mass_n, cap, sizeof(int))
        self.mass_tid = <int**>_grow(self.mass_tid, cap, sizeof(int*))
        self.mass_v = <double**>_grow(self.mass_v, cap, sizeof(double*))
        self.free_slots = <int*>_grow(self.free_slots, cap, sizeof(int))
        for i in range(cap - 1, old - 1, -1):
            self.mass_n[i] = -1
            self.free_slots[self.n_free] = <int>i
            self.n_free += 1
        self.slots_cap = cap
        return 0

    cdef int _grow_msgs(self, Py_ssize_t cap) except -1:
        self.m_written = <double*>_grow(self.m_written, cap, sizeof(double))
        self.m_delivered = <double*>_grow(self.m_delivered, cap, sizeof(double))
        self.m_left = <int*>_grow(self.m_left, cap, sizeof(int))
        self.m_sent = <int*>_grow(self.m_sent, cap, sizeof(int))
        self.m_sender = <int*>_grow(self.m_sender, cap, sizeof(int))
        self.m_recipient = <int*>_grow(self.m_recipient, cap, sizeof(int))
        self.msgs_cap = cap
        return 0

    cdef int _new_slot(self) except -1:
        if self.n_free == 0:
            self._grow_slots(self.slots_cap * 2)
        self.n_free -= 1
        return self.free_slots[self.n_free]

    cdef inline void _free_slot(self, int slot) noexcept:
        self._clear_mass(slot)
        self.free_slots[self.n_free] = slot
        self.n_free += 1

    cdef inline void _clear_mass(self, int slot) noexcept:
        if self.mass_n[slot] >= 0:
            free(self.mass_tid[slot])
            free(self.mass_v[slot])
            self.mass_n[slot] = -1

    cdef int _set_mass(self, int slot, int n) except -1:
        self._clear_mass(slot)
        self.mass_tid[slot] = <int*>_grow(NULL, n if n > 0 else 1, sizeof(int))
        self.mass_v[slot] = <double*>_grow(NULL, n if n > 0 else 1, sizeof(double))
        self.mass_n[slot] = n
        return 0

    # ------------------------------------------------------------------ heap

    cdef int _push(self, double t, int kind, int idx) except -1:
        cdef Py_ssize_t i, parent
        cdef Event ev
        if self.heap_n == self.heap_cap:
            self.heap_cap *= 2
            self.heap = <Event*>_grow(self.heap, self.heap_cap, sizeof(Event))
        self.seq += 1
        ev.t = t
        ev.seq = self.seq
        ev.kind = kind
        ev.idx = idx
        i = self.heap_n
        self.heap_n += 1
        while i > 0:
            parent = (i - 1) >> 1
            if _before(&ev, &self.heap[parent]):
                self.heap[i] = self.heap[parent]
                i = parent
            else:
                break
        self.heap[i] = ev
        return 0

    cdef inline Event _pop(self) noexcept:
        cdef Event top = self.heap[0]
        cdef Event last
        cdef Py_ssize_t i = 0, child, n
        self.heap_n -= 1
        n = self.heap_n
        if n > 0:
            last = self.heap[n]
            while True:
                child = 2 * i + 1
                if child >= n:
                    break
                if child + 1 < n and _before(&self.heap[child + 1], &self.heap[child]):
                    child += 1
                if _before(&self.heap[child], &last):
                    self.heap[i] = self.heap[child]
                    i = child
                else:
                    break
            self.heap[i] = last
        return top

    # ------------------------------------------------------------------ draws

    cdef inline double _random(self) except? -1.0:
        return <double>self.rng_random()

    cdef double _delay(self, double lambd) except? -1.0:
        cdef double ms
        if lambd == 0.0:
            return 0.0
        ms = nearbyint(-log(1.0 - self._random()) / lambd * 1000)
        if ms > MAX_DELAY_MS:
            ms = MAX_DELAY_MS
        return ms / 1000

    cdef inline int _pick(self, int layer) except -1:
        cdef int n = self.layer_size[layer]
        return self.layer_nodes[self.layer_start[layer] + <int>(self._random() * n)]

    cdef int _client_packet(self, int client, int kind, int dest, long long msg, int egress) except -1:
        cdef int slot = self._new_slot()
        cdef int* route = self.route + <Py_ssize_t>slot * self.R
        cdef double* delays = self.delays + <Py_ssize_t>slot * self.R
        cdef int i
        route[0] = self.provider_nodes[client % self.n_providers]
        for i in range(self.L):
            route[i + 1] = self._pick(i)
        route[self.L + 1] = egress
        for i in range(self.L):
            delays[i + 1] = self._delay(self.hop_lambd)
        delays[0] = self._delay(self.prov_lambd)
        delays[self.L + 1] = 0.0
        self.plen[slot] = self.L + 2
        self.ppos[slot] = 0
        self.pkind[slot] = kind
        self.pdest[slot] = dest
        self.porigin[slot] = client
        self.pmsg[slot] = msg
        self.ptid[slot] = -1
        return slot

    cdef int _mix_loop_packet(self, int mix) except -1:
        cdef int slot = self._new_slot()
        cdef int* route = self.route + <Py_ssize_t>slot * self.R
        cdef double* delays = self.delays + <Py_ssize_t>slot * self.R
        cdef int me = self.layer_of[mix]
        cdef int provider = self.provider_nodes[<int>(self._random() * self.n_providers)]
        cdef int n = 0, layer, i
        for layer in range(me, self.L):
            route[n] = self._pick(layer)
            n += 1
        route[n] = provider
        n += 1
        for layer in range(me - 1):
            route[n] = self._pick(layer)
            n += 1
        route[n] = mix
        n += 1
        for i in range(n - 1):
            delays[i] = self._delay(self.hop_lambd if route[i] != provider else self.prov_lambd)
        delays[n - 1] = 0.0
        self.plen[slot] = n
        self.ppos[slot] = 0
        self.pkind[slot] = MIX_LOOP
        self.pdest[slot] = -1
        self.porigin[slot] = mix
        self.pmsg[slot] = -1
        self.ptid[slot] = -1
        return slot

    # ------------------------------------------------------------------ adversary

    cdef int _start_target(self, int slot, long long msg, double t) except -1:
        if self.n_targets >= self.S:
            return 0
        cdef int tid = self.n_targets
        self.n_targets += 1
        self.t_out[tid] = 1.0
        self.t_volume[tid] = 0.0
        self.t_vlogv[tid] = 0.0
        self.t_exits[tid] = 0
        self.t_trunc[tid] = 0.0
        self.t_sent_at[tid] = t
        self.t_done[tid] = 0
        self.t_own_out[tid] = 0
        self.t_recipient[tid] = self.m_recipient[msg]
        self.by_dest.append({})
        self._set_mass(slot, 1)
        self.mass_tid[slot][0] = tid
        self.mass_v[slot][0] = 1.0
        self.ptid[slot] = tid
        return 0

    cdef int _enter(self, int node, int slot) except -1:
        cdef int S = self.S
        cdef Py_ssize_t row = <Py_ssize_t>node * S
        cdef int i, tid
        cdef int n = self.mass_n[slot]
        cdef int* tids = self.mass_tid[slot]
        cdef double* vs = self.mass_v[slot]
        for i in range(n):
            tid = tids[i]
            if self.pool_has[row + tid]:
                self.pool_v[row + tid] = self.pool_v[row + tid] + vs[i]
            else:
                self.pool_has[row + tid] = 1
                self.pool_v[row + tid] = 0.0 + vs[i]
                self.pool_list[row + self.pool_n[node]] = tid
                self.pool_n[node] += 1
        self._clear_mass(slot)
        return 0

    cdef int _leave(self, int node, int k, int slot) except -1:
        cdef int S = self.S
        cdef Py_ssize_t row = <Py_ssize_t>node * S
        cdef int n = self.pool_n[node]
        cdef int i, tid, kept = 0, out_n = 0
        cdef double s, limit, share, keep
        cdef int* lst = self.pool_list + row
        if k == 1:
            self._set_mass(slot, n)
            for i in range(n):
                tid = lst[i]
                self.mass_tid[slot][i] = tid
                self.mass_v[slot][i] = self.pool_v[row + tid]
                self.pool_has[row + tid] = 0
            self.pool_n[node] = 0
            return 0
        limit = EPSILON_C
        share = 1.0 / k
        keep = 1.0 - share
        self._set_mass(slot, n)
        for i in range(n):
            tid = lst[i]
            s = self.pool_v[row + tid]
            if s < limit or self.t_done[tid]:
                self.pool_has[row + tid] = 0
                self.t_trunc[tid] += s
                self.t_out[tid] -= s
            else:
                self.mass_tid[slot][out_n] = tid
                self.mass_v[slot][out_n] = s * share
                out_n += 1
                self.pool_v[row + tid] = s * keep
                lst[kept] = tid
                kept += 1
        self.pool_n[node] = kept
        if out_n == 0:
            self._clear_mass(slot)
        else:
            self.mass_n[slot] = out_n
        return 0

    cdef int _exit(self, int slot, double t) except -1:
        cdef int n = self.mass_n[slot]
        cdef int* tids = self.mass_tid[slot]
        cdef double* vs = self.mass_v[slot]
        cdef int dest = self.pdest[slot] if self.pkind[slot] != ACK else -1  # an ACK: known as a reply
        cdef int own = self.ptid[slot]
        cdef int i, tid
        cdef double v
        for i in range(n):
            tid = tids[i]
            if self.t_done[tid]:
                continue
            v = vs[i]
            self.t_volume[tid] += v
            self.t_vlogv[tid] += v * log2(v)
            self.t_exits[tid] += 1
            self.t_out[tid] -= v
            if dest >= 0:
                d = <dict>self.by_dest[tid]
                d[dest] = d.get(dest, 0.0) + v
            if own == tid:
                self.t_own_out[tid] = 1
            if self.t_out[tid] < DONE_C and self.t_own_out[tid]:
                self._finish(tid)
        self._clear_mass(slot)
        return 0

    cdef int _consumed(self, int slot) except -1:
        cdef int i
        for i in range(self.mass_n[slot]):
            self.t_out[self.mass_tid[slot][i]] -= self.mass_v[slot][i]
        self._clear_mass(slot)
        return 0

    cdef int _finish(self, int tid) except -1:
        self.t_done[tid] = 1
        result = conclude(self.t_volume[tid], self.t_vlogv[tid], self.t_exits[tid], self.by_dest[tid],
                          self.t_recipient[tid], self.t_trunc[tid], self.t_sent_at[tid])
        if result is not None:
            self.results.append(result)
        self.by_dest[tid] = {}
        return 0

    # ------------------------------------------------------------------ moving packets

    cdef int _answer(self, int kind, int origin, int node, double t) except -1:
        """Cover scheme "acks": the provider ``node`` that got a client's packet answers its SURB.

        The ACK is held there Exp(delay_mean) (the sender's choice), crosses the mix layers and
        ends in the sender's mailbox; a loop's ends at a random provider. Draws as ``Simulation._answer``.
        """
        cdef int slot = self._new_slot()
        cdef int* route = self.route + <Py_ssize_t>slot * self.R
        cdef double* delays = self.delays + <Py_ssize_t>slot * self.R
        cdef int i
        route[0] = node
        for i in range(self.L):
            route[i + 1] = self._pick(i)
        for i in range(self.L + 1):
            delays[i] = self._delay(self.hop_lambd)
        delays[self.L + 1] = 0.0
        if kind == LOOP:  # to a random mailbox at a random provider, where it is discarded
            route[self.L + 1] = self.provider_nodes[<int>self.rng_randrange(self.n_providers)]
            self.pdest[slot] = -1
        else:
            route[self.L + 1] = self.provider_nodes[origin % self.n_providers]
            self.pdest[slot] = origin
        self.plen[slot] = self.L + 2
        self.ppos[slot] = 0
        self.pkind[slot] = ACK
        self.porigin[slot] = origin
        self.pmsg[slot] = -1
        self.ptid[slot] = -1
        self.sent[ACK] += 1
        self._travel(slot, t, False)
        return 0

    cdef int _travel(self, int slot, double t, bint leaving) except -1:
        cdef int* route = self.route + <Py_ssize_t>slot * self.R
        cdef int last = self.plen[slot] - 1
        cdef int node, pos, k, kind
        cdef long long msg
        cdef double d
        while True:
            if leaving:
                node = route[self.ppos[slot]]
                if node < self.n_mixes:
                    if self.tracked[node]:
                        k = self.count[node]
                        self.count[node] = k - 1
                        if self.pool_n[node] > 0:
                            self._leave(node, k, slot)
                    if self.mass_n[slot] >= 0 and self.last_layer[node]:
                        self._exit(slot, t)
                self.ppos[slot] += 1
                if self.link != 0.0:
                    self._push(t + self.link, _ARRIVE, slot)
                    return 0
            pos = self.ppos[slot]
            node = route[pos]
            if pos == last:
                kind = self.pkind[slot]
                self.delivered[kind] += 1
                if self.mass_n[slot] >= 0:
                    self._consumed(slot)
                msg = self.pmsg[slot]
                if msg >= 0:
                    self.m_left[msg] -= 1
                    if self.m_left[msg] == 0:
                        self.m_delivered[msg] = t
                self._free_slot(slot)  # before the ACK takes a slot: growing the arrays moves ``route``
                if self.cover_acks and kind != ACK and kind != MIX_LOOP:
                    self._answer(kind, self.porigin[slot], node, t)
                return 0
            if self.tracked[node]:
                self.count[node] += 1
                if self.mass_n[slot] >= 0:
                    self._enter(node, slot)
            d = self.delays[<Py_ssize_t>slot * self.R + pos]
            if d != 0.0:
                self._push(t + d, _DEPART, slot)
                return 0
            leaving = True

    cdef int _emit(self, int slot, double t) except -1:
        self.sent[self.pkind[slot]] += 1
        if self.link == 0.0:
            self._travel(slot, t, False)
        else:
            self._push(t + self.link, _ARRIVE, slot)
        return 0

    cdef int _send_real(self, long long msg, double t, double warmup) except -1:
        cdef int recipient = self.m_recipient[msg]
        cdef int slot = self._client_packet(self.m_sender[msg], REAL, recipient, msg,
                                            self.provider_nodes[recipient % self.n_providers])
        self.m_sent[msg] += 1
        if self.m_sent[msg] == 1 and t >= warmup:
            self._start_target(slot, msg, t)
        self._emit(slot, t)
        return 0

    cdef int _drop_packet(self, int who) except -1:
        cdef int egress = self.provider_nodes[<int>self.rng_randrange(self.n_providers)]  # before the path
        return self._client_packet(who, DROP, -1, -1, egress)

    def run(self, sim):
        """Run to the end; copy the counters, messages and adversary results into ``sim``."""
        cfg = sim.config
        cdef int n_clients = self.n_clients
        cdef int n_mixes = self.n_mixes
        cdef int P = self.n_providers
        cdef double rates[7]
        cdef double* deadlines[7]
        cdef int kind, who, i, slot, r, recipient, fragments = cfg.fragments
        cdef long long events = 0, mid
        cdef double t, nxt, end_time = 0.0
        cdef double write_end = cfg.duration
        cdef double end = cfg.duration + cfg.drain_s
        cdef double warmup = cfg.warmup_s
        cdef bint payload_stream = cfg.lambda_payload > 0
        cdef Event ev
        rates[0] = rates[1] = 0.0
        rates[_WRITE] = cfg.real_rate
        rates[_PAYLOAD] = cfg.lambda_payload
        rates[_LOOP] = cfg.lambda_loop
        rates[_DROP] = cfg.lambda_drop
        rates[_MIX_LOOP] = cfg.lambda_mix
        for kind in range(7):
            deadlines[kind] = NULL
        try:
            for kind in range(_WRITE, _MIX_LOOP + 1):
                deadlines[kind] = <double*>_grow(NULL, n_mixes if kind == _MIX_LOOP else n_clients, sizeof(double))
            for who in range(n_clients):
                for kind in range(_WRITE, _MIX_LOOP):
                    if rates[kind] > 0:
                        deadlines[kind][who] = -log(1.0 - self._random()) / rates[kind]
                        self._push(deadlines[kind][who], kind, who)
            if rates[_MIX_LOOP] > 0:
                for who in range(n_mixes):
                    deadlines[_MIX_LOOP][who] = -log(1.0 - self._random()) / rates[_MIX_LOOP]
                    self._push(deadlines[_MIX_LOOP][who], _MIX_LOOP, who)
            queues = [None] * n_clients
            while self.heap_n > 0:
                ev = self._pop()
                t = ev.t
                kind = ev.kind
                events += 1
                if kind == _DEPART:
                    self._travel(ev.idx, t, True)
                    end_time = t
                    continue
                if kind == _ARRIVE:
                    self._travel(ev.idx, t, False)
                    end_time = t
                    continue
                who = ev.idx
                if kind == _PAYLOAD:
                    queue = queues[who]
                    if queue:
                        self._send_real(queue.popleft(), t, warmup)
                    else:
                        self._emit(self._drop_packet(who), t)
                elif kind == _WRITE:
                    if t >= write_end:
                        continue
                    r = self.rng_randrange(n_clients - 1)
                    recipient = r + (r >= who)
                    if self.n_msgs == self.msgs_cap:
                        self._grow_msgs(self.msgs_cap * 2)
                    mid = self.n_msgs
                    self.n_msgs += 1
                    self.m_written[mid] = t
                    self.m_delivered[mid] = -1.0
                    self.m_left[mid] = fragments
                    self.m_sent[mid] = 0
                    self.m_sender[mid] = who
                    self.m_recipient[mid] = recipient
                    if payload_stream:
                        if queues[who] is None:
                            queues[who] = _deque()
                        queues[who].extend([mid] * fragments)
                    else:
                        for i in range(fragments):
                            self._send_real(mid, t, warmup)
                elif kind == _LOOP:
                    self._emit(self._client_packet(who, LOOP, who, -1, self.provider_nodes[who % P]), t)
                elif kind == _DROP:
                    self._emit(self._drop_packet(who), t)
                else:
                    self._emit(self._mix_loop_packet(who), t)
                end_time = t
                nxt = deadlines[kind][who] - log(1.0 - self._random()) / rates[kind]
                deadlines[kind][who] = nxt
                if nxt < end:
                    self._push(nxt, kind, who)
        finally:
            for kind in range(7):
                free(deadlines[kind])
        for tid in range(self.n_targets):
            if not self.t_done[tid]:
                self._finish(tid)
        self.results.sort(key=_sent_at)
        sim.events = events
        sim.end_time = end_time
        sim.sent = [self.sent[i] for i in range(self.kinds)]
        sim.delivered_packets = [self.delivered[i] for i in range(self.kinds)]
        sim.adversary.results = self.results
        sim.latencies_s = [self.m_delivered[i] - self.m_written[i] for i in range(self.n_msgs)
                           if self.m_delivered[i] >= 0]
        sim.n_messages = self.n_msgs


cdef double EPSILON_C = EPSILON
cdef double DONE_C = DONE

from collections import deque as _deque


def _sent_at(result):
    return result.sent_at

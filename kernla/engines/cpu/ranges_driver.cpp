// kernla block-sparse driver (ranges), appended to the translation unit of template.cpp by source.py.
// Row ranges [rows[2k], rows[2k+1]) cover [0, nx) exactly (kernla/engines/ranges.py normalises them);
// row range k folds the column ranges [cols[2s], cols[2s+1]) for s in [slices[k-1], slices[k]) (slices[-1]
// read as 0), in order. Parallel over blocks of IB rows; each (row block, column range) is one run_block
// call, merged into the block's accumulators in column order; a row range with no column range gets
// the reduction's value over no column (run_block on an empty range only initialises).

static inline void merge_rows(Slot* into, const Slot* from, int64_t rows, int64_t E) {
#if MODE_PRODUCT
    for (int64_t r = 0; r < rows * E; r++) into[r] += from[r];
#else
    (void)E;
    for (int64_t r = 0; r < rows; r++) acc_merge(into[r], from[r]);
#endif
}

// Returns 0, or 1 when memory ran out.
extern "C" int kl_reduce_ranges(int64_t nx, int64_t ny, const void** args, T* out_f, int64_t* out_i,
                                int64_t E, int nthreads, int64_t nranges, const int64_t* rows,
                                const int64_t* slices, const int64_t* cols) {
    (void)nx;
    if (nthreads < 1) nthreads = 1;
    const int64_t slot_width = IS_PRODUCT ? E : 1;
    std::vector<int64_t> first;  // first task (row block) of each row range
    std::vector<Slot> local, part;
    std::vector<T> bufs;
    try {
        first.resize((size_t)(nranges + 1), 0);
        local.resize((size_t)(nthreads * IB * slot_width));
        part.resize((size_t)(nthreads * IB * slot_width));
        bufs.resize((size_t)(nthreads * BUF));
    } catch (const std::bad_alloc&) {
        return 1;
    }
    for (int64_t k = 0; k < nranges; k++) first[k + 1] = first[k] + (rows[2 * k + 1] - rows[2 * k] + IB - 1) / IB;
    const int64_t ntasks = first[nranges];
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t task = 0; task < ntasks; task++) {
        const int t = omp_get_thread_num();
        const int64_t k = (int64_t)(std::upper_bound(first.begin(), first.end(), task) - first.begin()) - 1;
        const int64_t ibeg = rows[2 * k] + (task - first[k]) * IB, iend = std::min(rows[2 * k + 1], ibeg + IB);
        Slot* slots = &local[(size_t)(t * IB * slot_width)];
        Slot* other = &part[(size_t)(t * IB * slot_width)];
        T* buf = &bufs[(size_t)(t * BUF)];
        const int64_t s0 = k ? slices[k - 1] : 0, s1 = slices[k];
        if (s0 == s1) run_block(args, ny, E, ibeg, iend, 0, 0, slots, buf);
        for (int64_t s = s0; s < s1; s++) {
            run_block(args, ny, E, ibeg, iend, cols[2 * s], cols[2 * s + 1], s == s0 ? slots : other, buf);
            if (s > s0) merge_rows(slots, other, iend - ibeg, E);
        }
        for (int64_t i = ibeg; i < iend; i++) finish_row(slots + (i - ibeg) * slot_width, E, i, out_f, out_i);
    }
    return 0;
}

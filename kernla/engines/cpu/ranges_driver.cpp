// kernla block-sparse driver (ranges), appended to the translation unit of template.cpp by source.py.
// Row ranges [rows[2k], rows[2k+1]) cover [0, nx) exactly (kernla/engines/ranges.py normalises them);
// row range k folds the column ranges [cols[2s], cols[2s+1]) for s in [slices[k-1], slices[k]) (slices[-1]
// read as 0), in order. Parallel over blocks of IB rows; each (row block, column range) is one run_block
// call, merged into the block's accumulators in column order; a row range with no column range gets
// the reduction's value over no column (run_block on an empty range only initialises). With fewer row
// blocks than 4 per thread, each block's columns are also cut in `splits` pieces of equal length run
// as separate tasks, and the pieces' accumulators merged in column order afterwards.

static inline void merge_rows(Slot* into, const Slot* from, int64_t rows, int64_t E) {
#if MODE_PRODUCT
    for (int64_t r = 0; r < rows * E; r++) into[r] += from[r];
#else
    (void)E;
    for (int64_t r = 0; r < rows; r++) acc_merge(into[r], from[r]);
#endif
}

// Fold the columns at offsets [lo, hi) of the concatenated column ranges cols[s0..s1) into `slots` (rows
// [ibeg, iend), freshly initialised), using `other` for the partial accumulators of each later range.
static void fold_columns(const void** args, int64_t ny, int64_t E, int64_t ibeg, int64_t iend,
                         const int64_t* cols, int64_t s0, int64_t s1, int64_t lo, int64_t hi, Slot* slots,
                         Slot* other, T* buf) {
    bool first = true;
    int64_t offset = 0;  // of range s in the concatenation
    for (int64_t s = s0; s < s1 && offset < hi; s++) {
        const int64_t len = cols[2 * s + 1] - cols[2 * s];
        const int64_t a = std::max(lo, offset), b = std::min(hi, offset + len);
        offset += len;
        if (a >= b) continue;
        const int64_t jbeg = cols[2 * s] + (a - (offset - len)), jend = jbeg + (b - a);
        run_block(args, ny, E, ibeg, iend, jbeg, jend, first ? slots : other, buf);
        if (!first) merge_rows(slots, other, iend - ibeg, E);
        first = false;
    }
    if (first) run_block(args, ny, E, ibeg, iend, 0, 0, slots, buf);  // no column: the empty value
}

// Returns 0, or 1 when memory ran out.
extern "C" int kl_reduce_ranges(int64_t nx, int64_t ny, const void** args, T* out_f, int64_t* out_i,
                                int64_t E, int nthreads, int64_t nranges, const int64_t* rows,
                                const int64_t* slices, const int64_t* cols) {
    (void)nx;
    if (nthreads < 1) nthreads = 1;
    const int64_t slot_width = IS_PRODUCT ? E : 1;
    const int64_t block_slots = IB * slot_width;
    std::vector<int64_t> first, length;  // first row block of each row range; its columns in all
    try {
        first.resize((size_t)(nranges + 1), 0);
        length.resize((size_t)std::max<int64_t>(nranges, 1), 0);
    } catch (const std::bad_alloc&) {
        return 1;
    }
    int64_t longest = 0;
    for (int64_t k = 0; k < nranges; k++) {
        first[k + 1] = first[k] + (rows[2 * k + 1] - rows[2 * k] + IB - 1) / IB;
        for (int64_t s = k ? slices[k - 1] : 0; s < slices[k]; s++) length[k] += cols[2 * s + 1] - cols[2 * s];
        longest = std::max(longest, length[k]);
    }
    const int64_t nblocks = first[nranges];
    int64_t splits = 1;
    if (nblocks < 4 * nthreads)
        splits = std::max<int64_t>(1, std::min((longest + TJ - 1) / TJ, (4 * nthreads + nblocks - 1) / nblocks));
    std::vector<Slot> local, part, pieces;
    std::vector<T> bufs;
    try {
        local.resize((size_t)(nthreads * block_slots));
        part.resize((size_t)(nthreads * block_slots));
        bufs.resize((size_t)(nthreads * BUF));
        if (splits > 1) pieces.resize((size_t)(nblocks * splits * block_slots));
    } catch (const std::bad_alloc&) {
        return 1;
    }
    const int64_t ntasks = nblocks * splits;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t task = 0; task < ntasks; task++) {
        const int t = omp_get_thread_num();
        const int64_t blk = task / splits, p = task % splits;
        const int64_t k = (int64_t)(std::upper_bound(first.begin(), first.end(), blk) - first.begin()) - 1;
        const int64_t ibeg = rows[2 * k] + (blk - first[k]) * IB, iend = std::min(rows[2 * k + 1], ibeg + IB);
        Slot* slots = splits > 1 ? &pieces[(size_t)(task * block_slots)] : &local[(size_t)(t * block_slots)];
        const int64_t piece = (length[k] + splits - 1) / splits;
        const int64_t lo = std::min(length[k], p * piece), hi = std::min(length[k], lo + piece);
        fold_columns(args, ny, E, ibeg, iend, cols, k ? slices[k - 1] : 0, slices[k], lo, hi, slots,
                     &part[(size_t)(t * block_slots)], &bufs[(size_t)(t * BUF)]);
        if (splits == 1)
            for (int64_t i = ibeg; i < iend; i++) finish_row(slots + (i - ibeg) * slot_width, E, i, out_f, out_i);
    }
    if (splits > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
        for (int64_t blk = 0; blk < nblocks; blk++) {
            const int64_t k = (int64_t)(std::upper_bound(first.begin(), first.end(), blk) - first.begin()) - 1;
            const int64_t ibeg = rows[2 * k] + (blk - first[k]) * IB, iend = std::min(rows[2 * k + 1], ibeg + IB);
            Slot* slots = &pieces[(size_t)(blk * splits * block_slots)];
            for (int64_t p = 1; p < splits; p++) merge_rows(slots, slots + p * block_slots, iend - ibeg, E);
            for (int64_t i = ibeg; i < iend; i++) finish_row(slots + (i - ibeg) * slot_width, E, i, out_f, out_i);
        }
    }
    return 0;
}

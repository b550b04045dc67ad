/* The CUDA runtime emulated on the host (read by tests/test_cuda_emulation.py, which pastes it before the
   generated kernels): CUDA built-ins as macros, a block as KL_EMU_MAX fibers (ucontext) at most. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define KL_SWITCH_START(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define KL_SWITCH_FINISH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define KL_SWITCH_START(save, bottom, size) ((void)0)
#define KL_SWITCH_FINISH(save, bottom, size) ((void)0)
#endif
struct kl_dim3 { unsigned x, y, z; };
static kl_dim3 kl_emu_block, kl_emu_grid;
static int kl_emu_tid;  /* the running thread (fiber) */
#define blockIdx kl_emu_block
#define gridDim kl_emu_grid
#define threadIdx (kl_dim3{(unsigned)kl_emu_tid, 0u, 0u})
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __syncthreads() kl_emu_barrier()
/* a buffer handed to a kernel argument of any pointer type (inputs are TIO, the tile operands T) */
struct kl_any { void* p; template <class X> operator X*() const { return (X*)p; } };
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }

/* A block is KL_EMU_MAX fibers at most, run one at a time, each until its next barrier or its end
   (deterministic: a missing barrier reads tiles not yet staged, or already overwritten). */
#define KL_EMU_MAX 1024
#define KL_EMU_STACK (64 * 1024)  /* the bottom page of each is a guard page: an overflow faults */
enum { KL_RUN, KL_WAIT, KL_DONE };
static ucontext_t kl_emu_sched, kl_emu_fiber[KL_EMU_MAX];
static int kl_emu_state[KL_EMU_MAX];
static void* kl_emu_fake[KL_EMU_MAX];
static char* kl_emu_stacks;
static const void* kl_emu_main_bottom;
static size_t kl_emu_main_size;
static void (*kl_emu_body)(void*);
static void* kl_emu_ctx;

static void kl_emu_barrier() {
    const int t = kl_emu_tid;
    kl_emu_state[t] = KL_WAIT;
    KL_SWITCH_START(&kl_emu_fake[t], kl_emu_main_bottom, kl_emu_main_size);
    swapcontext(&kl_emu_fiber[t], &kl_emu_sched);
    KL_SWITCH_FINISH(kl_emu_fake[t], &kl_emu_main_bottom, &kl_emu_main_size);
}
static void kl_emu_entry() {
    KL_SWITCH_FINISH(nullptr, &kl_emu_main_bottom, &kl_emu_main_size);
    kl_emu_body(kl_emu_ctx);
    kl_emu_state[kl_emu_tid] = KL_DONE;
    KL_SWITCH_START(nullptr, kl_emu_main_bottom, kl_emu_main_size);  /* this fiber ends */
    setcontext(&kl_emu_sched);
}
static void emu_grid(unsigned gx, unsigned gy, unsigned gz, int threads, void (*body)(void*), void* ctx) {
    if (threads > KL_EMU_MAX) { fprintf(stderr, "block of %d threads\n", threads); abort(); }
    if (!kl_emu_stacks) {
        kl_emu_stacks = (char*)mmap(nullptr, (size_t)KL_EMU_MAX * KL_EMU_STACK, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (kl_emu_stacks == (char*)MAP_FAILED) { perror("mmap"); abort(); }
        for (int t = 0; t < KL_EMU_MAX; t++) mprotect(kl_emu_stacks + (size_t)t * KL_EMU_STACK, 4096, PROT_NONE);
    }
    kl_emu_grid = kl_dim3{gx, gy, gz};
    kl_emu_body = body;
    kl_emu_ctx = ctx;
    for (unsigned z = 0; z < gz; z++)
        for (unsigned y = 0; y < gy; y++)
            for (unsigned x = 0; x < gx; x++) {
                kl_emu_block = kl_dim3{x, y, z};
                for (int t = 0; t < threads; t++) {
                    getcontext(&kl_emu_fiber[t]);
                    kl_emu_fiber[t].uc_stack.ss_sp = kl_emu_stacks + (size_t)t * KL_EMU_STACK;
                    kl_emu_fiber[t].uc_stack.ss_size = KL_EMU_STACK;
                    kl_emu_fiber[t].uc_link = nullptr;
                    makecontext(&kl_emu_fiber[t], kl_emu_entry, 0);
                    kl_emu_state[t] = KL_RUN;
                }
                for (;;) {
                    int waiting = 0, done = 0;
                    for (int t = 0; t < threads; t++) {
                        if (kl_emu_state[t] == KL_RUN) {
                            void* fake = nullptr;
                            kl_emu_tid = t;
                            KL_SWITCH_START(&fake, kl_emu_stacks + (size_t)t * KL_EMU_STACK, KL_EMU_STACK);
                            swapcontext(&kl_emu_sched, &kl_emu_fiber[t]);
                            KL_SWITCH_FINISH(fake, nullptr, nullptr);
                        }
                        waiting += kl_emu_state[t] == KL_WAIT;
                        done += kl_emu_state[t] == KL_DONE;
                    }
                    if (done == threads) break;
                    if (done) {  /* on a GPU: a hang or undefined behaviour */
                        fprintf(stderr, "__syncthreads() reached by %d of %d threads of block (%u,%u,%u)\n",
                                waiting, threads, x, y, z);
                        abort();
                    }
                    for (int t = 0; t < threads; t++) kl_emu_state[t] = KL_RUN;  /* all arrived */
                }
            }
}

package org.text2data;

import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.ThreadLocalState;
import org.bytedeco.pytorch.ThreadLocalStateGuard;
import org.bytedeco.pytorch.global.torch;

/**
 * The two passes of a {@link Text2Data#runStep} at the same time ({@link Constraint#setConcurrentPasses}): the
 * unconditional one on a worker thread this object owns, the conditional one on the caller's. Each computes its
 * gradients with {@code torch::autograd::grad}, which writes no {@code .grad}, so the two never touch the same
 * memory; the step then takes them one after the other, as the backward passes would have left them. The
 * worker runs under the caller's libtorch thread-local state (grad mode, autocast, ...), as PyTorch's own worker
 * threads do, and with the caller's TorchScript graph-optimizer setting, intra-op thread count and flushing of
 * denormal floats; OpenBLAS's threads are split between the two passes while they run.
 *
 * <p>Not thread-safe: used by one step at a time (the constraint's guard). CPU tensors only.
 */
final class ConcurrentPasses implements AutoCloseable {

    /**
     * A pass's loss (detached; in the caller's scope) and its gradients, one per input (undefined where the pass did
     * not reach it), owned here until {@link #closeGrads()}: the step hands them over, then frees them at once.
     */
    static final class Pass {
        private final Tensor loss;
        private TensorVector grads;

        private Pass(Tensor loss, TensorVector grads) {
            this.loss = loss;
            this.grads = grads;
        }

        Tensor loss() {
            return loss;
        }

        TensorVector grads() {
            if (grads == null) {
                throw new IllegalStateException("this pass's gradients were closed");
            }
            return grads;
        }

        boolean reachedAny() {
            for (long i = 0; i < grads().size(); i++) {
                try (Tensor g = grads.get(i)) {
                    if (g.defined()) {
                        return true;
                    }
                }
            }
            return false;
        }

        /** Frees the gradients' vector (idempotent); the tensors handed to the parameters stay theirs. */
        void closeGrads() {
            if (grads != null) {
                grads.close();
                grads = null;
            }
        }
    }

    private static final long WORKER_STACK = 8L << 20; // as a main thread's: libtorch recurses on deep graphs

    private final ExecutorService worker = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(null, r, "text2data-unconditional-pass", WORKER_STACK);
        t.setDaemon(true);
        return t;
    });

    /**
     * Runs both passes and waits for both, whatever happens, a checked exception thrown undeclared included: the
     * model is never left running on the worker when this returns or throws. The losses belong to the caller's
     * innermost {@link PointerScope} (there must be one); the gradients to the passes returned, which the caller
     * closes. A failing pass changes nothing (no gradient is written); if both fail, the unconditional pass's
     * failure is thrown, as running them in order would, with the other's attached.
     *
     * @param inputs the tensors to differentiate: the parameters a pass can reach (leaves that require grad)
     * @param check  whether to read each loss and refuse a NaN or infinite one before its backward pass
     * @return the unconditional pass, then the conditional one
     */
    Pass[] run(ConditionalModel model, Tensor data, Tensor cond, Tensor label, Loss loss, TensorVector inputs,
               boolean check) {
        PointerScope caller = PointerScope.getInnerScope();
        if (caller == null) {
            throw new IllegalStateException("ConcurrentPasses.run needs the caller's PointerScope");
        }
        ThreadLocalState state = new ThreadLocalState(); // the caller's, captured now; in the caller's scope
        // per-thread settings that state does not hold: TorchScript's graph optimizer (finetune turns it off so that
        // every step computes alike), the intra-op thread count and the CPU's flushing of denormals
        Settings settings = Settings.ofThisThread();
        LibTorch.beginBlasSplit();
        try {
            Future<Pass> first = worker.submit(() -> {
                workerSettings = settings.applyOver(workerSettings);
                return pass(state, model, data, null, label, loss, inputs, check);
            });
            Pass conditional = null;
            Throwable conditionalFailure = null;
            try {
                conditional = pass(null, model, data, cond, label, loss, inputs, check);
            } catch (Throwable t) { // whatever it is, the worker is waited for below
                conditionalFailure = t;
            }
            Pass unconditional = null;
            Throwable unconditionalFailure = null;
            try {
                unconditional = awaitUninterruptibly(first);
            } catch (ExecutionException e) {
                unconditionalFailure = e.getCause();
            }
            adopt(caller, unconditional);
            adopt(caller, conditional);
            if (unconditionalFailure != null || conditionalFailure != null) {
                for (Pass p : new Pass[] {unconditional, conditional}) {
                    if (p != null) {
                        p.closeGrads();
                    }
                }
                if (unconditionalFailure != null) {
                    if (conditionalFailure != null) {
                        unconditionalFailure.addSuppressed(conditionalFailure);
                    }
                    throw rethrow(unconditionalFailure);
                }
                throw rethrow(conditionalFailure);
            }
            return new Pass[] {unconditional, conditional};
        } finally {
            LibTorch.endBlasSplit();
        }
    }

    /**
     * The worker's {@link Settings} as last made, null before its first pass. Only the worker reads and writes it:
     * the thread is this object's alone, so nothing needs its own settings back.
     */
    private Settings workerSettings;

    /**
     * Per-thread settings outside {@link ThreadLocalState}, carried from the caller to the worker: libtorch's
     * TorchScript graph optimizer and intra-op thread count, and whether the CPU flushes denormal floats to zero
     * ({@code setFlushDenormal}: both passes compute alike, and at the same speed, only under the same setting).
     */
    private record Settings(boolean graphOptimize, int intraOpThreads, boolean flushDenormal) {
        static Settings ofThisThread() {
            return new Settings(torch.getGraphExecutorOptimize(), torch.get_num_threads(), LibTorch.flushesDenormals());
        }

        /**
         * Makes these this thread's settings, changing only what differs from {@code current} (null: read them);
         * returns these. ({@code set_num_threads} also sets libtorch's process-wide default: called only on a change.)
         */
        Settings applyOver(Settings current) {
            if (current == null) {
                current = ofThisThread();
            }
            if (current.graphOptimize != graphOptimize) {
                torch.setGraphExecutorOptimize(graphOptimize);
            }
            if (current.intraOpThreads != intraOpThreads) {
                torch.set_num_threads(intraOpThreads);
            }
            if (current.flushDenormal != flushDenormal) {
                torch.globalContext().setFlushDenormal(flushDenormal);
            }
            return this;
        }
    }

    /** One pass: forward, loss, its check, and the loss's gradients with respect to {@code inputs}. */
    private static Pass pass(ThreadLocalState state, ConditionalModel model, Tensor data, Tensor cond, Tensor label,
                             Loss loss, TensorVector inputs, boolean check) {
        try (ThreadLocalStateGuard guard = state == null ? null : new ThreadLocalStateGuard(state);
             PointerScope scope = new PointerScope()) {
            Tensor l = Text2Data.passLoss(model, data, cond, label, loss, check);
            // allow_unused: a parameter this pass does not reach gets an undefined gradient, as .grad stays unset
            TensorVector grads = torch.grad(new TensorVector(l), inputs, new TensorVector(), new BoolOptional(),
                    false, true);
            Tensor value = l.detach();
            grads.retainReference(); // both outlive this scope: the loss goes to the caller's, the gradients to the Pass
            value.retainReference();
            return new Pass(value, grads);
        }
    }

    /** Moves a pass's loss from the worker's keeping into the caller's scope. */
    private static void adopt(PointerScope caller, Pass p) {
        if (p != null) {
            caller.attach(p.loss());
            p.loss().releaseReference();
        }
    }

    private static Pass awaitUninterruptibly(Future<Pass> f) throws ExecutionException {
        boolean interrupted = false;
        try {
            while (true) {
                try {
                    return f.get();
                } catch (InterruptedException e) {
                    interrupted = true; // the worker is running the model on our tensors: wait for it anyway
                }
            }
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /**
     * Throws a pass's failure as it was thrown, a checked exception the model threw undeclared included: the caller
     * sees what the passes in turn would have thrown.
     */
    @SuppressWarnings("unchecked")
    private static <T extends Throwable> RuntimeException rethrow(Throwable t) throws T {
        throw (T) t;
    }

    /** Stops the worker thread (it is idle: a step always waits for it). */
    @Override
    public void close() {
        worker.shutdownNow();
    }
}

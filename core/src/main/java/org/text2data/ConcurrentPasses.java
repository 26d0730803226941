package org.text2data;

import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import org.bytedeco.javacpp.Pointer;
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
 * threads do, and OpenBLAS's threads are split between the two passes while they run.
 *
 * <p>Not thread-safe: used by one step at a time (the constraint's guard). CPU tensors only.
 */
final class ConcurrentPasses implements AutoCloseable {

    /** A pass's loss (detached) and gradients, one per parameter (undefined where the pass did not reach it). */
    record Pass(Tensor loss, TensorVector grads) {
        boolean reachedAny() {
            for (long i = 0; i < grads.size(); i++) {
                try (Tensor g = grads.get(i)) {
                    if (g.defined()) {
                        return true;
                    }
                }
            }
            return false;
        }
    }

    private static final long WORKER_STACK = 8L << 20; // as a main thread's: libtorch recurses on deep graphs

    private final ExecutorService worker = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(null, r, "text2data-unconditional-pass", WORKER_STACK);
        t.setDaemon(true);
        return t;
    });

    /**
     * Runs both passes and waits for both, whatever happens: the model is never left running on the worker when
     * this returns or throws. The results belong to the caller's innermost {@link PointerScope} (there must be
     * one), released with it. A failing pass changes nothing (no gradient is written); if both fail, the
     * unconditional pass's failure is thrown, as running them in order would, with the other's attached.
     *
     * @param inputs the parameters, in the constraint's order
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
        LibTorch.beginBlasSplit();
        try {
            Future<Pass> first = worker.submit(() -> pass(state, model, data, null, label, loss, inputs, check));
            Pass conditional = null;
            Throwable conditionalFailure = null;
            try {
                conditional = pass(null, model, data, cond, label, loss, inputs, check);
            } catch (RuntimeException | Error e) {
                conditionalFailure = e;
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
            if (unconditionalFailure != null) {
                if (conditionalFailure != null) {
                    unconditionalFailure.addSuppressed(conditionalFailure);
                }
                throw rethrow(unconditionalFailure);
            }
            if (conditionalFailure != null) {
                throw rethrow(conditionalFailure);
            }
            return new Pass[] {unconditional, conditional};
        } finally {
            LibTorch.endBlasSplit();
        }
    }

    /** One pass: forward, loss, its check, and the loss's gradients with respect to {@code inputs}. */
    private static Pass pass(ThreadLocalState state, ConditionalModel model, Tensor data, Tensor cond, Tensor label,
                             Loss loss, TensorVector inputs, boolean check) {
        String which = cond == null ? "unconditional" : "conditional";
        try (ThreadLocalStateGuard guard = state == null ? null : new ThreadLocalStateGuard(state);
             PointerScope scope = new PointerScope()) {
            Tensor l = Text2Data.scalarLoss(which, loss.apply(Text2Data.forward(model, data, cond), label));
            if (check) {
                Text2Data.requireFinite(which, l);
            }
            // allow_unused: a parameter this pass does not reach gets an undefined gradient, as .grad stays unset
            TensorVector grads = torch.grad(new TensorVector(l), inputs, new TensorVector(), new BoolOptional(),
                    false, true);
            Tensor value = l.detach();
            grads.retainReference(); // both outlive this scope: the caller's scope adopts them
            value.retainReference();
            return new Pass(value, grads);
        }
    }

    /** Moves a pass's results from the worker's keeping into the caller's scope. */
    private static void adopt(PointerScope caller, Pass p) {
        if (p == null) {
            return;
        }
        for (Pointer x : new Pointer[] {p.loss(), p.grads()}) {
            caller.attach(x);
            x.releaseReference();
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

    private static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) {
            return r;
        }
        if (t instanceof Error e) {
            throw e;
        }
        return new IllegalStateException("the unconditional pass failed: " + t, t);
    }

    /** Stops the worker thread (it is idle: a step always waits for it). */
    @Override
    public void close() {
        worker.shutdownNow();
    }
}

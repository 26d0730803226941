package org.text2data;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.List;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.text2data.engine.CudaGraph;
import org.text2data.engine.FusedEngine;
import org.text2data.engine.ParamState;

/**
 * {@link Text2Data#runStep} captured once as a CUDA graph and replayed: both forward and backward passes, the
 * projection and the fused optimizer update become one launch per step, as with {@code torch.cuda.graphs}.
 *
 * <p>As there, the step is fixed: the model, the optimizer, the loss and the input tensors. The caller keeps the
 * three input tensors given to {@link #capture} (the <em>static inputs</em>) and refills them in place before each
 * {@link #replay} ({@code data.copy_(nextBatch)}); shapes cannot change. The captured step holds its own references
 * to those tensors, the model and the loss until it is closed: the graph reads their memory at every replay, and a
 * handle the caller drops is freed by the garbage collector at a time nobody chooses, after which other tensors would
 * take that memory and the replays would read them (found on an H100: a benchmark that kept no reference to its batch
 * had its replays skipped as non-finite after about 90 steps). A reference cannot keep a model or loss open that is
 * closed on purpose: close them after the captured step, not before. The losses a replay returns are the
 * graph's own output tensors, overwritten by the next replay ({@code clone()} one to keep it). The learning rate
 * ({@link Constraint#setLr}), {@code alpha}, {@code beta} and {@code gConstraint} are read on the device at each
 * replay, so changing them needs no new capture. Each replay counts as a step of the constraint, and a replay
 * whose values are not all finite is skipped on the device and reported as every fused GPU step is (see
 * {@link Constraint#checkSkippedSteps()}).
 *
 * <p>Capturing needs the fused optimizer on a CUDA device ({@link Engine#FUSED}), no {@link GradientSync}, and
 * a model and loss that do not synchronise with the host or draw random numbers on the GPU while they run (a
 * graph would replay the same ones). Before the capture, the two passes run three times on a side stream
 * without updating anything (libtorch initialises its handles and workspaces there); the parameters and the
 * optimizer state are not changed by {@link #capture}. While capturing, no other thread may use the GPU.
 *
 * <p>Between replays, a parameter's {@code grad()} is its projected conditional gradient of the last replay, as
 * after {@link Text2Data#runStep}, as long as no other step of the constraint ran since the capture. A capture
 * records the step without running it: from the capture to the first replay the gradients are the graph's
 * buffers, not yet written (the gradients from before the capture are not kept). Close a
 * captured step (try-with-resources) to free the graph and its memory; closing the constraint does not.
 *
 * <p><b>Status:</b> checked on an H100 (2026-11-26, {@code bench/gpu/java-check.sh}): 100 replays equal 100
 * uncaptured steps to 1e-5 with the learning rate and {@code gConstraint} changed on the way, a NaN replay is
 * skipped and reported, a model that synchronises with the host and a replay after the optimizer state was released
 * are refused, and a replay takes 0.99-1.06x the time of PyTorch's captured plain step with fused Adam (four runs).
 */
public final class CapturedStep implements AutoCloseable {

    /** Warm-up runs of the two passes before the capture, as PyTorch's examples do. */
    static final int WARMUP = 3;

    private final Constraint optimizer;
    private final int device;
    /** The step's scalars on the device ({@link FusedEngine#newStepScalars}): lr, gConstraint, alpha, beta. */
    private final Tensor scalars;
    private final double[] written = {Double.NaN, Double.NaN, Double.NaN, Double.NaN};
    private MemorySegment plan;
    private CudaGraph graph;
    private CudaCapture capture;
    private Tensor uncond;
    private Tensor cond;
    private final int projected;
    /** The static inputs (cond, data, label), retained until close: the graph reads their memory. */
    private final Tensor[] inputs;
    /** The names of {@link #inputs}, for messages. */
    private static final String[] INPUT_NAMES = {"cond", "data", "label"};
    /** The static inputs' data addresses, shapes and strides at the capture: what the graph reads. */
    private final long[] inputAddresses = new long[3];
    private final long[][] inputShapes = new long[3][];
    private final long[][] inputStrides = new long[3][];
    /** The model and the loss, referenced until close: the graph reads their tensors' memory. */
    @SuppressWarnings({"unused", "FieldCanBeLocal"})
    private final ConditionalModel model;
    @SuppressWarnings({"unused", "FieldCanBeLocal"})
    private final Loss loss;
    /** The optimizer state's addresses when the graph was captured (see FusedEngine#stateAddresses). */
    private final long[] stateAddresses;
    private boolean closed;

    /**
     * Captures {@link Text2Data#runStep} with these arguments as a CUDA graph (see the class comment).
     *
     * @param optimizer   the constraint optimizer: the fused optimizer over parameters on a CUDA device
     * @param gConstraint the barrier's target used by the first replays (each {@link #replay} passes its own)
     * @param model       the model; its passes must reach {@code optimizer}'s parameters
     * @param cond        the static condition input, refilled by the caller before each replay
     * @param data        the static model input, refilled by the caller before each replay
     * @param label       the static target, refilled by the caller before each replay
     * @param loss        the loss of (prediction, label)
     * @return the captured step, ready to replay
     * @throws IllegalArgumentException if an argument is invalid (as for runStep) or the step cannot be captured
     *                                  (parameters on the CPU, libtorch's optimizer, another engine, a GradientSync),
     *                                  naming the cause; nothing was changed
     * @throws IllegalStateException    if the capture failed on the device (e.g. the model synchronised with the
     *                                  host or drew random numbers); the parameters and optimizer state are as they
     *                                  were
     */
    public static CapturedStep capture(Constraint optimizer, double gConstraint, ConditionalModel model,
                                       Tensor cond, Tensor data, Tensor label, Loss loss) {
        if (optimizer == null) {
            throw new IllegalArgumentException("optimizer is null");
        }
        optimizer.enter();
        try {
            Constraint.checkGConstraint(gConstraint);
            if (model == null || loss == null) {
                throw new IllegalArgumentException(model == null ? "model is null" : "loss is null");
            }
            Text2Data.checkBatch(optimizer.parameters().get(0), cond, data, label);
            String why = optimizer.captureRefusal();
            if (why != null) {
                throw new IllegalArgumentException("this step cannot be captured as a CUDA graph: " + why
                        + "; nothing was changed");
            }
            return new CapturedStep(optimizer, gConstraint, model, cond, data, label, loss);
        } finally {
            optimizer.exit();
        }
    }

    private CapturedStep(Constraint optimizer, double gConstraint, ConditionalModel model, Tensor condIn,
                         Tensor data, Tensor label, Loss loss) {
        this.optimizer = optimizer;
        this.model = model;
        this.loss = loss;
        this.inputs = new Tensor[3];
        FusedEngine fe = optimizer.fusedEngine();
        this.device = fe.device();
        List<Tensor> params = optimizer.parameters();
        ParamState[] states = optimizer.paramStates();
        Tensor[] saved = saveGrads(params);
        boolean capturing = false; // between beginCapture and endCapture: a failure discards the capture
        boolean recording = false; // until endCapture succeeded: a failure is the captured work's
        Tensor s = null;
        StepResult r = null;
        try {
            inputs[0] = retained(condIn);
            inputs[1] = retained(data);
            inputs[2] = retained(label);
            plan = fe.createPlan();
            s = fe.newStepScalars();
            capture = new CudaCapture(device); // from here libtorch's current stream is a side stream
            for (int k = 0; k < WARMUP; k++) {
                warmUp(optimizer, model, loss, condIn, data, label);
            }
            boolean[] hadGrad = new boolean[params.size()];
            for (int i = 0; i < hadGrad.length; i++) {
                hadGrad[i] = saved[i] != null;
            }
            fe.prepareCapture(states, optimizer.fusedOptions(), hadGrad);
            restoreGrads(params, saved);
            writeScalars(s, optimizer.fusedOptions().lr(), gConstraint, optimizer.alpha(), optimizer.beta());
            capture.synchronize();
            capture.beginPool();
            fe.usePlan(plan, s);
            optimizer.setCapturing(true);
            recording = true;
            CudaGraph.beginCapture(capture.stream());
            capturing = true;
            r = Text2Data.runStep(optimizer, gConstraint, model, condIn, data, label, loss);
            capturing = false;
            graph = CudaGraph.endCapture(capture.stream());
            recording = false;
            capture.close(); // the pool's allocation ends, the device is waited for, the old stream is current
            for (int i = 0; i < inputs.length; i++) {
                inputAddresses[i] = Tensors.address(inputs[i]);
                inputShapes[i] = inputs[i].shape();
                inputStrides[i] = Tensors.strides(inputs[i]);
            }
            this.scalars = s;
            this.stateAddresses = fe.stateAddresses(states);
            this.uncond = r.uncondLossTensor();
            this.cond = r.condLossTensor();
            this.projected = r.projectedTensors();
        } catch (RuntimeException | Error e) {
            // the hint on synchronisation only where the capture itself failed; Errors (out of memory) go as they are
            Throwable failure = e instanceof IllegalArgumentException || e instanceof Error ? e
                    : new IllegalStateException("the step could not be captured as a CUDA graph: " + e.getMessage()
                    + (recording ? " (a captured model and loss must not synchronise with the host, e.g. read a value"
                    + " with item(), nor draw random numbers on the GPU)" : "")
                    + "; the parameters and optimizer state are as they were", e);
            undo(failure, capturing, fe, states, params, saved, r, s);
            for (Tensor t : inputs) {
                release(t);
            }
            if (failure instanceof Error err) {
                throw err;
            }
            throw (RuntimeException) failure;
        } finally {
            optimizer.setCapturing(false);
            // after undo(), not before: while the plan is in use, FusedEngine.endStep launches nothing (no zero
            // gradients on a failed capture, whose error they would hide)
            fe.usePlan(MemorySegment.NULL, null);
            for (Tensor t : saved) {
                release(t);
            }
        }
    }

    /**
     * Replays the captured step on libtorch's current stream: one launch, no host synchronisation (except every
     * {@link Constraint#setCheckFiniteEvery N} steps, when the constraint reads its step status).
     *
     * @param gConstraint the barrier's target for the unconditional loss (finite, &gt;= 0)
     * @return the step's losses (the graph's output tensors, overwritten by the next replay) and projected count
     * @throws IllegalArgumentException if {@code gConstraint} is negative or not finite; nothing is replayed
     * @throws IllegalStateException    if this captured step or its constraint is closed, a static input was
     *                                  resized or given other memory since the capture, the optimizer state was
     *                                  released since the capture, the step could no longer be captured (a
     *                                  GradientSync was attached), or the launch fails
     * @throws NonFiniteException       if the constraint's periodic read finds a step skipped on the device
     */
    public StepResult replay(double gConstraint) {
        optimizer.enter();
        try {
            if (closed) {
                throw new IllegalStateException("this CapturedStep is closed");
            }
            Constraint.checkGConstraint(gConstraint);
            String why = optimizer.captureRefusal(); // e.g. a GradientSync attached since: the graph would skip it
            if (why != null) {
                throw new IllegalStateException("this captured step cannot be replayed any more: " + why
                        + ". Nothing was replayed");
            }
            String moved;
            try (PointerScope scope = new PointerScope()) {
                moved = inputChange(INPUT_NAMES, inputs, inputAddresses, inputShapes, inputStrides);
            }
            if (moved != null) {
                throw new IllegalStateException("the static input " + moved + ": the graph reads the memory and "
                        + "shape it had at the capture. Refill it in place (copy_) with a batch of the same shape, or "
                        + "close this captured step and capture again. Nothing was replayed");
            }
            if (!optimizer.fusedEngine().sameStateAddresses(optimizer.paramStates(), stateAddresses)) {
                throw new IllegalStateException("the optimizer state was released since the capture (a checkpoint "
                        + "without state for some parameter was loaded): the graph would write into freed memory; close "
                        + "this captured step and capture again. Nothing was replayed");
            }
            writeScalars(scalars, optimizer.fusedOptions().lr(), gConstraint, optimizer.alpha(), optimizer.beta());
            graph.replay(FusedEngine.currentStream(device));
            optimizer.countDeviceStep();
            return new StepResult(new Tensor(uncond), new Tensor(cond), projected, optimizer);
        } finally {
            optimizer.exit();
        }
    }

    /**
     * Whether {@link #close()} was called.
     *
     * @return true once closed
     */
    public boolean isClosed() {
        return closed;
    }

    /** Frees the graph, its plan and its memory pool (waits for the device). Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            if (graph != null) {
                graph.close();
            }
            FusedEngine.destroyPlan(plan); // waits for the device
            plan = null;
            capture.releasePool();
        } finally {
            release(scalars);
            uncond.close();
            cond.close();
            for (Tensor t : inputs) {
                release(t);
            }
        }
    }

    /**
     * Undoes a capture that failed: every step is tried, and what fails on the way is attached to {@code failure}
     * (the capture's own error is the one to report). The gradients and kept handles go back to what they were.
     */
    private void undo(Throwable failure, boolean capturing, FusedEngine fe, ParamState[] states,
                      List<Tensor> params, Tensor[] saved, StepResult r, Tensor s) {
        attempt(failure, () -> {
            if (capturing) {
                CudaGraph.discardCapture(capture.stream());
            }
        });
        attempt(failure, () -> {
            if (graph != null) {
                graph.close();
            }
        });
        attempt(failure, () -> {
            if (capture != null) {
                capture.close();
            }
        });
        attempt(failure, () -> {
            fe.releaseGradients(states); // whatever the capture left in the gradients and kept handles
            fe.endStep(states);
            restoreGrads(params, saved);
        });
        attempt(failure, () -> {
            if (r != null) {
                r.close();
            }
        });
        attempt(failure, () -> FusedEngine.destroyPlan(plan));
        attempt(failure, () -> {
            if (capture != null) {
                capture.releasePool();
            }
        });
        release(s);
    }

    private static void attempt(Throwable failure, Runnable step) {
        try {
            step.run();
        } catch (RuntimeException | Error e) {
            failure.addSuppressed(e);
        }
    }

    /** Writes into the device scalars each value that differs from what they hold (one small kernel each). */
    private void writeScalars(Tensor s, double lr, double gConstraint, double alpha, double beta) {
        double[] v = {lr, gConstraint, alpha, beta};
        for (int k = 0; k < 4; k++) {
            if (Double.doubleToRawLongBits(v[k]) != Double.doubleToRawLongBits(written[k])) {
                FusedEngine.writeStepScalar(s, k, v[k]);
                written[k] = v[k];
            }
        }
    }

    /** The two passes of a step without the update: what libtorch initialises lazily happens here. */
    private static void warmUp(Constraint c, ConditionalModel model, Loss loss, Tensor cond, Tensor data,
                               Tensor label) {
        try (PointerScope scope = new PointerScope()) {
            c.beginStep();
            try {
                loss.apply(model.forward(data, null), label).backward();
                c.firstStep(true);
                loss.apply(model.forward(data, cond), label).backward();
            } finally {
                c.endStep();
            }
        }
    }

    /** Owning handles on the parameters' current gradients (null where none). */
    private static Tensor[] saveGrads(List<Tensor> params) {
        Tensor[] saved = new Tensor[params.size()];
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < saved.length; i++) {
                Tensor g = params.get(i).grad();
                if (g.defined()) {
                    saved[i] = retained(g);
                }
            }
        }
        return saved;
    }

    private static void restoreGrads(List<Tensor> params, Tensor[] saved) {
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < saved.length; i++) {
                if (saved[i] != null) {
                    params.get(i).mutable_grad().put(saved[i]);
                } else {
                    params.get(i).mutable_grad().reset();
                }
            }
        }
    }

    /**
     * How a static input differs from what the graph was captured with, or null where none does: its shape or
     * strides (a {@code resize_}, {@code set_} or {@code as_strided_} since), or its memory (a {@code set_}, or a
     * {@code resize_} that reallocated it; the graph would read the old, freed memory).
     */
    static String inputChange(String[] names, Tensor[] inputs, long[] addresses, long[][] shapes, long[][] strides) {
        for (int i = 0; i < inputs.length; i++) {
            if (inputs[i] == null) {
                continue;
            }
            long[] shape = inputs[i].shape();
            long[] stride = Tensors.strides(inputs[i]);
            if (!Arrays.equals(shape, shapes[i]) || !Arrays.equals(stride, strides[i])) {
                return "'" + names[i] + "' changed its shape or strides since the capture (shape "
                        + Arrays.toString(shapes[i]) + ", strides " + Arrays.toString(strides[i]) + " then; shape "
                        + Arrays.toString(shape) + ", strides " + Arrays.toString(stride) + " now)";
            }
            if (Tensors.address(inputs[i]) != addresses[i]) {
                return "'" + names[i] + "' was given other memory since the capture (set_, or a resize_ that "
                        + "reallocated it)";
            }
        }
        return null;
    }

    /** A handle of its own on t's tensor (null stays null), released with {@link #release}. */
    private static Tensor retained(Tensor t) {
        if (t == null) {
            return null;
        }
        try (PointerScope scope = new PointerScope()) {
            Tensor h = new Tensor(t);
            h.retainReference();
            return h;
        }
    }

    private static void release(Tensor t) {
        if (t != null) {
            t.releaseReference();
        }
    }
}

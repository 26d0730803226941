package org.text2data;

import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.ConcurrentModificationException;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.OptimizerParamGroup;
import org.bytedeco.pytorch.OptimizerParamGroupVector;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.StringTensorDict;
import org.bytedeco.pytorch.StringTensorDictItem;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.text2data.engine.Engines;
import org.text2data.engine.FusedEngine;
import org.text2data.engine.FusedOptimizer;
import org.text2data.engine.NonFiniteGradientException;
import org.text2data.engine.ParamState;
import org.text2data.engine.ProjectionEngine;

/**
 * Text2Data's constrained optimizer: a base optimizer (libtorch's SGD, Adam, AdamW, RMSprop or
 * Adagrad, or with the fused engine libtext2data's fused SGD, Adam and AdamW, see
 * {@link OptimizerSpec#fused(Boolean)}) plus the dynamic-barrier projection that keeps the unconditional loss
 * near {@code gConstraint} while the conditional loss is minimised.
 *
 * <pre>{@code
 * // net: a bytedeco Module; model: its forward(data, condOrNull) as a ConditionalModel
 * try (Constraint opt = new Constraint(net, OptimizerSpec.adam(1e-3))) {
 *     for (...) {
 *         try (StepResult r = Text2Data.runStep(opt, gConstraint, model, cond, data, label, Loss.MSE)) { ... }
 *     }
 * }
 * }</pre>
 *
 * <p>Parameters can be given as a bytedeco {@link Module} (its {@code named_parameters()}, those that
 * require grad), a {@link TensorVector} or {@link StringTensorDict} (e.g. {@code net.parameters()},
 * {@code net.named_parameters()}; those that require grad), a {@code Map<String, Tensor>} or any
 * {@code Iterable<Tensor>} (taken as they are). Whatever the form, the constraint takes its own
 * (owning) handle of each tensor while the constructor runs: the tensors it updates are the caller's
 * (same storage, same autograd leaf), and what was passed in (a {@code TensorVector} and the views its
 * {@code get(i)} returns, say) may be closed or collected afterwards. {@link #close()} releases those
 * handles, the optimizer's state and the kept gradients; the parameters themselves stay with
 * their owner. Letting a constraint go without closing it leaves that native memory to the garbage
 * collector, which does not see its size: close it (try-with-resources).
 *
 * Like the Python reference it offers {@link #zeroGrad}, {@link #firstStep}, {@link #secondStep},
 * {@link #step(Supplier, double, double)}, the base optimizer and its param groups, and the per-layer
 * gradient-norm diagnostic.
 *
 * <p>One training loop per constraint: a step (and every other call that touches the base optimizer
 * or the gradients) made while another thread is inside one is refused with a
 * {@link ConcurrentModificationException} naming that thread, before anything is read or written. A
 * constraint may move between threads from one step to the next. {@link #close()} from another thread
 * while a step runs lets that step finish and releases the native resources when it returns.
 */
public final class Constraint implements AutoCloseable {

    private final Tensor[] params;
    private final String[] names;
    private final TensorVector paramVector;
    /** libtorch's optimizer, or null when the fused optimizer steps (see {@link OptimizerSpec#fused(Boolean)}). */
    private final Optimizer base;
    private final OptimizerSpec spec;
    private final ProjectionEngine engine;
    /** The fused optimizer's options (its learning rate is the param group's), or null for libtorch's optimizer. */
    private FusedOptimizer.Options fused;
    /**
     * Per parameter, everything kept between calls, as PyTorch's {@code optimizer.state[p]}: the engine's kept
     * gradient and buffers and the fused optimizer's state (step count, moments, momentum buffer). Created once,
     * passed to the engine on every call, closed with this constraint.
     */
    private final ParamState[] states;
    /** CUDA fused steps: read the device's step status every this many steps (1: after every step). */
    private int checkFiniteEvery = 100;
    /** CUDA fused steps: skipped steps already reported, and steps since the status was last read. */
    private long reportedSkipped;
    private int unchecked;
    private double alpha;
    private double beta;
    private boolean checkFinite = true;
    /** Set by close(); the native resources are released by whoever holds (or next takes) the guard. */
    private volatile boolean closed;
    private volatile boolean released;
    /** The thread inside a call that touches native state, or null (see {@link #enter()}). */
    private final AtomicReference<Thread> user = new AtomicReference<>();
    /** Nesting depth of the user thread's calls (step() calls firstStep() ...); only the user touches it. */
    private int depth;
    /** Steps taken by the base optimizer, for messages. */
    private long steps;
    /** The last model runStep found to reach these parameters (see Text2Data.runStep). */
    private WeakReference<Object> verifiedModel = new WeakReference<>(null);
    private GradientSync gradientSync;
    /** The worker of {@link #setConcurrentPasses}, or null: runStep's passes run one after the other. */
    private ConcurrentPasses concurrentPasses;
    /** While a {@link CapturedStep} records the step: a step that is recorded, not taken, is not counted. */
    private boolean capturing;

    /**
     * The parameters of a bytedeco module that require grad, named as in its {@code named_parameters()},
     * with alpha = beta = 1 and the default engine.
     *
     * @param module the model; its parameters are updated in place
     * @param base the base optimizer
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(Module module, OptimizerSpec base) {
        this(module, base, 1.0, 1.0, Engine.AUTO);
    }

    /**
     * The parameters of a bytedeco module that require grad (see above), with the default engine.
     *
     * @param module the model; its parameters are updated in place
     * @param base the base optimizer
     * @param alpha the barrier's alpha (finite, &gt;= 0)
     * @param beta the barrier's beta (finite, &gt;= 0)
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(Module module, OptimizerSpec base, double alpha, double beta) {
        this(module, base, alpha, beta, Engine.AUTO);
    }

    /**
     * The parameters of a bytedeco module that require grad, in the order and with the names of its
     * {@code named_parameters()} (recursive); parameters that do not require grad (frozen layers) are
     * left out, as PyTorch users leave them out of an optimizer.
     *
     * @param module the model; its parameters are updated in place
     * @param base the base optimizer
     * @param alpha the barrier's alpha (finite, &gt;= 0)
     * @param beta the barrier's beta (finite, &gt;= 0)
     * @param engine the projection engine
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(Module module, OptimizerSpec base, double alpha, double beta, Engine engine) {
        this(Taken.of(module), base, alpha, beta, engine);
    }

    /**
     * A bytedeco {@code TensorVector} (e.g. {@code module.parameters()}): the tensors that require grad,
     * named {@code #i} by their position in the vector; alpha = beta = 1 and the default engine. The
     * vector may be closed or collected afterwards.
     *
     * @param params the parameters
     * @param base the base optimizer
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(TensorVector params, OptimizerSpec base) {
        this(params, base, 1.0, 1.0, Engine.AUTO);
    }

    /**
     * A bytedeco {@code TensorVector} (e.g. {@code module.parameters()}): the tensors that require grad,
     * named {@code #i} by their position in the vector.
     *
     * @param params the parameters; the vector may be closed or collected afterwards
     * @param base the base optimizer
     * @param alpha the barrier's alpha (finite, &gt;= 0)
     * @param beta the barrier's beta (finite, &gt;= 0)
     * @param engine the projection engine
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(TensorVector params, OptimizerSpec base, double alpha, double beta, Engine engine) {
        this(Taken.of(params), base, alpha, beta, engine);
    }

    /**
     * A bytedeco {@code StringTensorDict} (e.g. {@code module.named_parameters()}): the tensors that
     * require grad, with their names; alpha = beta = 1 and the default engine. The dict may be closed or
     * collected afterwards.
     *
     * @param namedParams the parameters by name
     * @param base the base optimizer
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(StringTensorDict namedParams, OptimizerSpec base) {
        this(namedParams, base, 1.0, 1.0, Engine.AUTO);
    }

    /**
     * A bytedeco {@code StringTensorDict} (e.g. {@code module.named_parameters()}): the tensors that
     * require grad, with their names, in the dict's order.
     *
     * @param namedParams the parameters; the dict may be closed or collected afterwards
     * @param base the base optimizer
     * @param alpha the barrier's alpha (finite, &gt;= 0)
     * @param beta the barrier's beta (finite, &gt;= 0)
     * @param engine the projection engine
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(StringTensorDict namedParams, OptimizerSpec base, double alpha, double beta, Engine engine) {
        this(Taken.of(namedParams), base, alpha, beta, engine);
    }

    /**
     * Any parameter list (taken as it is, named {@code #i}), with alpha = beta = 1 and the default engine.
     *
     * @param params the parameters; the list and its handles may be closed or collected afterwards
     * @param base the base optimizer
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(Iterable<Tensor> params, OptimizerSpec base) {
        this(params, base, 1.0, 1.0, Engine.AUTO);
    }

    /**
     * Any parameter list (taken as it is, named {@code #i}), with the default engine.
     *
     * @param params the parameters; the list and its handles may be closed or collected afterwards
     * @param base the base optimizer
     * @param alpha the barrier's alpha (finite, &gt;= 0)
     * @param beta the barrier's beta (finite, &gt;= 0)
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(Iterable<Tensor> params, OptimizerSpec base, double alpha, double beta) {
        this(params, base, alpha, beta, Engine.AUTO);
    }

    /**
     * Any parameter list, taken as it is (frozen tensors included), named {@code #i} by position.
     *
     * @param params the parameters; the list and its handles may be closed or collected afterwards
     * @param base the base optimizer
     * @param alpha the barrier's alpha (finite, &gt;= 0)
     * @param beta the barrier's beta (finite, &gt;= 0)
     * @param engine the projection engine
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(Iterable<Tensor> params, OptimizerSpec base, double alpha, double beta, Engine engine) {
        this(Taken.of(params), base, alpha, beta, engine);
    }

    /**
     * Named parameters (see below) with alpha = beta = 1 and the default engine.
     *
     * @param namedParams the parameters by name; the map and its handles may be closed or collected afterwards
     * @param base the base optimizer
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(Map<String, Tensor> namedParams, OptimizerSpec base) {
        this(namedParams, base, 1.0, 1.0, Engine.AUTO);
    }

    /**
     * Named parameters (see below) with the default engine.
     *
     * @param namedParams the parameters by name; the map and its handles may be closed or collected afterwards
     * @param base the base optimizer
     * @param alpha the barrier's alpha (finite, &gt;= 0)
     * @param beta the barrier's beta (finite, &gt;= 0)
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(Map<String, Tensor> namedParams, OptimizerSpec base, double alpha, double beta) {
        this(namedParams, base, alpha, beta, Engine.AUTO);
    }

    /**
     * Parameters with names (as in a state dict), used in error messages and diagnostics. The map's
     * iteration order is the parameter order; the tensors are taken as they are (frozen ones included).
     *
     * @param namedParams the parameters by name; the map and its handles may be closed or collected afterwards
     * @param base the base optimizer
     * @param alpha the barrier's alpha (finite, &gt;= 0)
     * @param beta the barrier's beta (finite, &gt;= 0)
     * @param engine the projection engine
     * @throws IllegalArgumentException if an argument is null, a coefficient is invalid, there is no parameter to
     *                                  optimize, a parameter is not floating point or not a leaf, or parameters
     *                                  share memory
     */
    public Constraint(Map<String, Tensor> namedParams, OptimizerSpec base, double alpha, double beta, Engine engine) {
        this(Taken.of(namedParams), base, alpha, beta, engine);
    }

    private Constraint(Taken taken, OptimizerSpec base, double alpha, double beta, Engine engine) {
        boolean ok = false;
        ProjectionEngine created = null; // closed again if the constructor fails after creating it
        try {
            if (base == null) {
                throw new IllegalArgumentException("base optimizer spec is null");
            }
            if (engine == null) {
                throw new IllegalArgumentException("engine is null");
            }
            this.alpha = checkCoefficient("alpha", alpha);
            this.beta = checkCoefficient("beta", beta);
            for (int i = 0; i < taken.params.size(); i++) {
                Tensor t = taken.params.get(i);
                if (!t.is_floating_point()) {
                    throw new IllegalArgumentException("parameter " + taken.names.get(i)
                            + " is not floating point: " + Tensors.describe(t));
                }
                if (!t.is_leaf()) {
                    throw new IllegalArgumentException("parameter " + taken.names.get(i) + " is not a leaf tensor: it "
                            + "is computed from other tensors, so backward gives it no gradient (optimize the tensors it "
                            + "is computed from, or pass t.detach().requires_grad_(true))");
                }
            }
            if (taken.params.isEmpty()) {
                throw new IllegalArgumentException(taken.skipped > 0
                        ? "no parameters to optimize: all " + taken.skipped + " have requires_grad = false"
                        : "no parameters to optimize");
            }
            this.params = taken.params.toArray(new Tensor[0]);
            this.names = taken.names.toArray(new String[0]);
            checkDistinct(this.names, this.params);
            this.paramVector = new TensorVector(this.params);
            this.spec = base;
            created = Engines.create(engine.toString(), this.params, this.names);
            this.engine = created;
            this.states = new ParamState[this.params.length];
            for (int i = 0; i < states.length; i++) {
                states[i] = new ParamState();
            }
            String whyNot = fusedUnavailable(base, engine, this.engine, this.params, this.names);
            if (Boolean.TRUE.equals(base.fused()) && whyNot != null) {
                throw new IllegalArgumentException("OptimizerSpec.fused(true) cannot be honoured: " + whyNot
                        + " (fused(false) or the default uses libtorch's optimizer)");
            }
            if (whyNot == null && !Boolean.FALSE.equals(base.fused())) {
                this.fused = base.fusedOptions(base.lr());
                this.base = null;
            } else {
                this.base = base.create(paramVector);
            }
            ok = true;
        } finally {
            if (!ok) {
                if (created != null) {
                    created.close();
                }
                taken.release();
            }
        }
    }

    /**
     * Why the fused optimizer cannot step these parameters, or null when it can: it has SGD, Adam and AdamW, needs
     * the fused engine (so the native library) and contiguous parameters of one device.
     */
    private static String fusedUnavailable(OptimizerSpec spec, Engine asked, ProjectionEngine engine, Tensor[] params,
                                           String[] names) {
        if (!spec.hasFusedVariant()) {
            return "there is no fused " + spec.type() + " (SGD, Adam and AdamW only)";
        }
        if (!(engine instanceof FusedEngine)) {
            return asked == Engine.PLAIN ? "Engine.PLAIN computes with libtorch operations (the fused optimizer needs "
                    + "Engine.FUSED or Engine.AUTO)" : "the native library is not available: " + Engines.fusedUnavailableReason();
        }
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                if (params[i].numel() > 1 && !params[i].is_contiguous()) {
                    return "parameter '" + names[i] + "' is not contiguous";
                }
            }
        }
        return null;
    }

    /**
     * The parameters as the constructor takes them: an owning handle of each (a new libtorch
     * {@code Tensor} on the same {@code TensorImpl}, so the same storage and autograd leaf), made while
     * whatever the caller passed is still alive; so nothing the constraint keeps points into the caller's
     * containers ({@code TensorVector.get(i)} and {@code StringTensorDict} items are views into them).
     */
    private static final class Taken {
        final List<Tensor> params = new ArrayList<>();
        final List<String> names = new ArrayList<>();
        int skipped;

        static Taken of(Module module) {
            if (module == null) {
                throw new IllegalArgumentException("module is null");
            }
            LibTorch.ensureLoaded();
            try (StringTensorDict dict = module.named_parameters(true)) {
                return of(dict);
            }
        }

        static Taken of(StringTensorDict dict) {
            if (dict == null || dict.isNull()) {
                throw new IllegalArgumentException("named parameters are null");
            }
            LibTorch.ensureLoaded();
            Taken t = new Taken();
            try {
                for (long i = 0; i < dict.size(); i++) {
                    StringTensorDictItem item = dict.get(i);
                    t.add(item.key().getString(), item.value(), true);
                }
            } catch (RuntimeException e) {
                t.release();
                throw e;
            }
            return t;
        }

        static Taken of(TensorVector vector) {
            if (vector == null || vector.isNull()) {
                throw new IllegalArgumentException("parameter vector is null");
            }
            LibTorch.ensureLoaded();
            Taken t = new Taken();
            try {
                for (long i = 0; i < vector.size(); i++) {
                    t.add("#" + i, vector.get(i), true);
                }
            } catch (RuntimeException e) {
                t.release();
                throw e;
            }
            return t;
        }

        static Taken of(Iterable<Tensor> params) {
            if (params == null) {
                throw new IllegalArgumentException("parameters are null");
            }
            LibTorch.ensureLoaded();
            Taken t = new Taken();
            try {
                int i = 0;
                for (Tensor p : params) {
                    t.add("#" + i++, p, false);
                }
            } catch (RuntimeException e) {
                t.release();
                throw e;
            }
            return t;
        }

        static Taken of(Map<String, Tensor> named) {
            if (named == null) {
                throw new IllegalArgumentException("named parameters are null");
            }
            LibTorch.ensureLoaded();
            Taken t = new Taken();
            try {
                for (Map.Entry<String, Tensor> e : named.entrySet()) {
                    t.add(e.getKey(), e.getValue(), false);
                }
            } catch (RuntimeException e) {
                t.release();
                throw e;
            }
            return t;
        }

        private void add(String name, Tensor p, boolean skipFrozen) {
            if (p == null || p.isNull() || !p.defined()) {
                throw new IllegalArgumentException("parameter " + (name.startsWith("#") ? name : "'" + name + "'")
                        + " is null or undefined");
            }
            if (skipFrozen && !p.requires_grad()) {
                skipped++;
                return;
            }
            Tensor own = new Tensor(p); // libtorch's copy constructor: a new reference to the same tensor
            params.add(own);
            names.add(name);
        }

        void release() {
            for (Tensor p : params) {
                p.close();
            }
            params.clear();
        }
    }

    /**
     * Zeroes every existing gradient in place (PyTorch 1.13's {@code zero_grad()}, which the reference uses).
     *
     * @throws ConcurrentModificationException if another thread is inside a call on this constraint
     * @throws IllegalStateException if this constraint is closed
     */
    public void zeroGrad() {
        enter();
        try (PointerScope scope = new PointerScope()) {
            for (Tensor p : params) {
                Tensor g = p.grad();
                if (g.defined()) {
                    g.zero_();
                }
            }
        } finally {
            exit();
        }
    }

    /**
     * Begins a {@link Text2Data#runStep}: the engine releases the gradients when it can (see
     * {@link ProjectionEngine#releaseGradients}; the values are those of zeroing them), else they are zeroed.
     * With a {@link GradientSync} they are always zeroed: a gradient this process's pass did not reach must
     * still exist (zero) to receive the other processes' average, as in the reference. {@link #endStep()} ends
     * it, however the step ends.
     */
    void beginStep() {
        enter();
        try {
            if (gradientSync != null || !engine.releaseGradients(states)) {
                zeroGrad();
            }
        } finally {
            exit();
        }
    }

    /** Ends what {@link #beginStep()} began; safe to call when it did not run. */
    void endStep() {
        if (engine != null) {
            engine.endStep(states);
        }
    }

    /**
     * Keeps the current gradients as constraint gradients (the gradient of the unconditional loss),
     * and zeroes the gradients when asked.
     *
     * @param zeroGrad whether to zero the parameters' gradients after keeping them
     * @throws ConcurrentModificationException if another thread is inside a call on this constraint
     * @throws IllegalStateException if this constraint is closed
     */
    public void firstStep(boolean zeroGrad) {
        enter();
        try {
            engine.firstStep(states, zeroGrad);
        } finally {
            exit();
        }
    }

    /**
     * Projects the current gradients (of the conditional loss) so that, to first order, the
     * unconditional loss does not rise above the barrier. {@code gValue} is the unconditional loss
     * read in this step, as a 0-dim tensor on the parameters' device. Does not step the base optimizer.
     * With the finiteness check on, every gradient the base optimizer will use is checked, projected or
     * not (a parameter without an unconditional gradient is not projected, but its gradient is still used).
     *
     * @param gValue the unconditional loss of this step, a one-element tensor
     * @param gConstraint the barrier's target for the unconditional loss (finite, &gt;= 0)
     * @return how many parameter tensors were projected
     * @throws IllegalArgumentException if {@code gValue} is not a one-element tensor or {@code gConstraint} is
     *                                  negative or not finite
     * @throws IllegalStateException if {@link #firstStep} has kept no gradients, or this constraint is closed
     * @throws NonFiniteException if a gradient is NaN or infinite (with the finiteness check on); nothing is updated
     * @throws ConcurrentModificationException if another thread is inside a call on this constraint
     */
    public int secondStep(Tensor gValue, double gConstraint) {
        enter();
        try {
            checkGConstraint(gConstraint);
            if (gValue == null || !gValue.defined() || gValue.numel() != 1) {
                throw new IllegalArgumentException("gValue must be a one-element tensor");
            }
            if (!engine.hasConstraintGrads()) {
                throw new IllegalStateException("secondStep() before firstStep(): no constraint gradients kept");
            }
            try {
                return engine.secondStep(states, gValue, gConstraint, alpha, beta, checkFinite);
            } catch (NonFiniteGradientException e) {
                throw new NonFiniteException(refusal(e) + "; step " + (steps + 1) + " was refused, nothing was updated");
            }
        } finally {
            exit();
        }
    }

    /**
     * {@link #secondStep(Tensor, double)} with the unconditional loss as a number.
     *
     * @param gValue the unconditional loss of this step
     * @param gConstraint the barrier's target for the unconditional loss (finite, &gt;= 0)
     * @return how many parameter tensors were projected
     * @throws NonFiniteException if {@code gValue} or a gradient is NaN or infinite; nothing is updated
     * @throws IllegalArgumentException if {@code gConstraint} is negative or not finite
     * @throws IllegalStateException if {@link #firstStep} has kept no gradients, or this constraint is closed
     * @throws ConcurrentModificationException if another thread is inside a call on this constraint
     */
    public int secondStep(double gValue, double gConstraint) {
        enter();
        try (PointerScope scope = new PointerScope()) {
            if (!Double.isFinite(gValue)) {
                throw new NonFiniteException("unconditional loss gValue is " + gValue + "; nothing was updated");
            }
            return secondStep(Tensors.scalarLike(params[0], gValue), gConstraint);
        } finally {
            exit();
        }
    }

    /**
     * The whole constrained update, as an optimizer's {@code step}: keeps the current gradients (of the
     * unconditional loss {@code gValue}, already backpropagated) as constraint gradients, zeroes the
     * gradients, runs {@code closure} (which must compute the conditional loss and call backward),
     * projects, and steps the base optimizer. Unlike the reference's {@code step}, which leaves the base
     * step to the caller, this one takes it, as every PyTorch optimizer's {@code step} does.
     *
     * @param closure computes the conditional loss, calls backward on it and returns it
     * @param gValue the unconditional loss whose gradients are current
     * @param gConstraint the barrier's target for the unconditional loss (finite, &gt;= 0)
     * @return what the closure returned
     * @throws IllegalArgumentException if {@code closure} is null or {@code gConstraint} is negative or not finite
     * @throws NonFiniteException if {@code gValue}, a gradient or (float16) an updated parameter is NaN or infinite
     * @throws ConcurrentModificationException if another thread is inside a call on this constraint
     * @throws IllegalStateException if this constraint is closed
     */
    public Tensor step(Supplier<Tensor> closure, double gValue, double gConstraint) {
        enter();
        try {
            if (closure == null) {
                throw new IllegalArgumentException("step() requires a closure");
            }
            checkGConstraint(gConstraint);
            if (!Double.isFinite(gValue)) {
                throw new NonFiniteException("unconditional loss gValue is " + gValue + "; nothing was updated");
            }
            firstStep(true);
            Tensor loss = closure.get();
            try (PointerScope scope = new PointerScope()) {
                constrainedStep(Tensors.scalarLike(params[0], gValue), gConstraint);
            }
            return loss;
        } finally {
            exit();
        }
    }

    /**
     * {@link #secondStep(Tensor, double)} then {@link #stepBase()}: with the fused optimizer one native call that
     * projects and updates in the same pass over memory, else the two calls.
     *
     * @return how many parameter tensors were projected
     */
    int constrainedStep(Tensor gValue, double gConstraint) {
        enter();
        try {
            if (fused == null) {
                int projected = secondStep(gValue, gConstraint);
                stepBase();
                return projected;
            }
            checkGConstraint(gConstraint);
            if (gValue == null || !gValue.defined() || gValue.numel() != 1) {
                throw new IllegalArgumentException("gValue must be a one-element tensor");
            }
            if (!engine.hasConstraintGrads()) {
                throw new IllegalStateException("a constrained step before firstStep(): no constraint gradients kept");
            }
            return fusedStep(gValue, gConstraint, true);
        } finally {
            exit();
        }
    }

    /** One fused optimizer step (see {@link FusedEngine#optimizerStep}); the caller is inside enter(). */
    private int fusedStep(Tensor gValue, double gConstraint, boolean project) {
        FusedEngine fe = (FusedEngine) engine;
        int projected;
        try {
            projected = fe.optimizerStep(states, fused, gValue, gConstraint, alpha, beta, project);
        } catch (NonFiniteGradientException e) {
            throw new NonFiniteException(refusal(e) + "; step " + (steps + 1) + " was refused, nothing was updated (parameters, gradients and the " + spec.type()
                    + " state are as they were)");
        }
        if (!capturing) {
            countDeviceStep();
        }
        return projected;
    }

    /**
     * A fused step was taken on the host or enqueued on a device (taken or replayed): counted; on a device, its step
     * status is read every {@link #setCheckFiniteEvery N} steps.
     */
    void countDeviceStep() {
        steps++;
        if (((FusedEngine) engine).device() >= 0 && ++unchecked >= checkFiniteEvery) {
            checkSkippedSteps();
        }
    }

    /**
     * Why this constraint's step cannot be captured as a CUDA graph, or null if it can (see {@link CapturedStep}).
     */
    String captureRefusal() {
        if (fused == null) {
            return "it needs the fused optimizer (SGD, Adam or AdamW on Engine.FUSED or AUTO, the default where "
                    + "libtext2data loads; OptimizerSpec.fused(true) asks for it): "
                    + "libtorch's optimizers compute their step counts and bias corrections on the host, which a "
                    + "graph would replay frozen";
        }
        if (!(engine instanceof FusedEngine fe)) {
            return "it needs Engine.FUSED (this constraint's engine is " + engine.name() + ")";
        }
        if (fe.device() < 0) {
            return "the parameters are on the CPU; a CUDA graph replays work on a CUDA device only "
                    + "(move the model and the batch to a GPU)";
        }
        if (gradientSync != null) {
            return "a GradientSync is attached: its exchange of the losses and gradients between processes is not "
                    + "captured (capture each process's step without it)";
        }
        return null;
    }

    /** The fused engine, the records and options a {@link CapturedStep} captures with (see captureRefusal). */
    FusedEngine fusedEngine() {
        return (FusedEngine) engine;
    }

    FusedOptimizer.Options fusedOptions() {
        return fused;
    }

    void setCapturing(boolean capturing) {
        this.capturing = capturing;
    }

    /**
     * With the fused optimizer on a GPU a step whose values are not all finite is skipped on the device (nothing is
     * written, as with the eager check) and counted there, without the host waiting for the device. This reads that
     * count (one synchronisation) and throws if a step was skipped since the last report. It is called every
     * {@link #setCheckFiniteEvery N} steps, when a {@link StepResult}'s loss is read, and by checkpoints and
     * {@link #close()}. Elsewhere it does nothing.
     *
     * @throws NonFiniteException naming the first skipped step and its parameter, if a step was skipped since the
     *                            last report
     * @throws IllegalStateException if this constraint is closed
     */
    public void checkSkippedSteps() {
        enter();
        try {
            if (unchecked == 0) {
                return; // no fused device step since the status was last read: nothing new to read
            }
            unchecked = 0;
            if (fused == null || !(engine instanceof FusedEngine fe)) {
                return;
            }
            long[] status = fe.readStepStatus();
            if (status == null || status[1] <= reportedSkipped) {
                return;
            }
            long newly = status[1] - reportedSkipped;
            reportedSkipped = status[1];
            String param = status[3] >= 0 ? "parameter '" + names[(int) status[3]] + "'" : "a parameter";
            String why = switch ((int) status[4]) {
                case 1 -> "its unconditional (constraint) gradient held a NaN or an infinity";
                case 2 -> "its gradient held a NaN or an infinity";
                case 3 -> "its half-precision update overflowed";
                case 4 -> "the unconditional loss was not finite, or this parameter's lam overflowed";
                default -> "a value was not finite";
            };
            throw new NonFiniteException(newly + " fused step(s) skipped on the device since the last check; the first "
                    + "skipped step of this optimizer was its step " + status[2] + ": " + param + ": " + why
                    + "; a skipped step changes nothing (parameters, gradients and optimizer state stay as they were)");
        } finally {
            exit();
        }
    }

    /** What a non-finite value refused: the parameter it names, or the unconditional loss, which is no parameter's. */
    private String refusal(NonFiniteGradientException e) {
        return e.getMessage().startsWith("g_value") ? "the unconditional loss: " + e.getMessage()
                : "parameter '" + names[e.tensorIndex()] + "': " + e.getMessage();
    }

    /**
     * {@link #checkSkippedSteps()} unless another thread is inside a call on this constraint (a logging thread
     * reading a {@link StepResult}'s loss while the training thread steps): then nothing is read here, and the
     * training thread reports a skipped step at its own next check.
     */
    void checkSkippedStepsIfFree() {
        Thread owner = user.get();
        if (owner != null && owner != Thread.currentThread()) {
            return;
        }
        try {
            checkSkippedSteps();
        } catch (ConcurrentModificationException e) {
            // the training thread entered between the look and the call: it reports at its next check
        }
    }

    /**
     * How often {@link #checkSkippedSteps()} runs on its own with the fused optimizer on a GPU: every {@code n}
     * steps (default 100; 1 checks after every step, at the cost of one synchronisation per step). On the host
     * every step is checked as it is taken, whatever this says.
     *
     * @param n the number of steps between two reads of the device's step status, &gt;= 1
     * @throws IllegalArgumentException if {@code n} is less than 1
     */
    public void setCheckFiniteEvery(int n) {
        if (n < 1) {
            throw new IllegalArgumentException("checkFiniteEvery must be >= 1, got " + n);
        }
        this.checkFiniteEvery = n;
    }

    /** Whether the fused optimizer steps on a GPU, where non-finite values are found and skipped on the device. */
    boolean checksOnDevice() {
        return fused != null && engine instanceof FusedEngine fe && fe.device() >= 0;
    }

    /**
     * Whether this constraint steps with a fused optimizer of libtext2data rather than libtorch's
     * (see {@link OptimizerSpec#fused(Boolean)}).
     *
     * @return true for the fused optimizer
     */
    public boolean isFused() {
        return fused != null;
    }

    /**
     * Steps the base optimizer with the current gradients. With the fused optimizer this is one native call
     * that updates every parameter and its state from its gradient as it is (no projection), all or nothing:
     * a NaN or an infinity in a gradient, or a float16 update that overflows, throws {@link NonFiniteException}
     * on the CPU and changes nothing, optimizer state included (on CUDA the step is skipped on the device: see
     * {@link #checkSkippedSteps()}). What follows is about libtorch's optimizers.
     *
     * <p>With the finiteness check on, a step that would make a float16 parameter NaN or infinite is
     * refused before anything changes: libtorch's optimizers compute in the parameter's dtype, and in
     * float16 their own arithmetic overflows where the gradients are finite (Adam's {@code eps = 1e-8}
     * rounds to 0, so a moment over a squared gradient that underflowed to 0 divides by 0; squares of
     * gradients above 256 overflow). Such a step is rehearsed on copies of the float16 parameters and of
     * the optimizer's state, and taken only if they stay finite; the {@link NonFiniteException} names the
     * step and the parameter, and the parameters, gradients, moments, step counts and learning rates are
     * as they were. That costs, per step, a round trip of the optimizer's whole state through libtorch's
     * serialization (its only access to it) and a second update of the float16 parameters, and only where a
     * parameter is float16. In float32 and float64 the updates of Adam, AdamW, RMSprop and Adagrad are
     * bounded by a small multiple of the learning rate, and SGD's by {@code lr} times a gradient that the
     * check found finite, so they cannot overflow at any sensible learning rate: the check costs nothing there.
     *
     * @throws NonFiniteException if the step would make a float16 parameter NaN or infinite (with the check on);
     *                            nothing was updated
     * @throws ConcurrentModificationException if another thread is inside a call on this constraint
     * @throws IllegalStateException if this constraint is closed, or (with the check on, float16 parameters)
     *                               libtorch refuses the step; nothing was updated
     */
    public void stepBase() {
        enter();
        try (PointerScope scope = new PointerScope()) {
            if (fused != null) {
                fusedStep(null, 0.0, false);
                return;
            }
            if (checkFinite) {
                if (float16 == null) {
                    float16 = new Float16Guard(params, names);
                }
                float16.check(base, spec, steps + 1);
            }
            base.step();
            steps++;
        } finally {
            exit();
        }
    }

    /** Rehearses float16 steps (made at the first checked base step). */
    private Float16Guard float16;

    /**
     * The libtorch optimizer underneath (its state, its options).
     *
     * @return the base optimizer, owned by this constraint
     * @throws IllegalStateException if this constraint is closed
     */
    public Optimizer baseOptimizer() {
        checkOpen(); // handed out: calls on it are the caller's to keep to one thread
        if (base == null) {
            throw new IllegalStateException("this Constraint steps with libtext2data's fused " + spec.type()
                    + " (OptimizerSpec.fused, " + engine.name() + "): there is no libtorch optimizer; its learning rate "
                    + "is in paramGroups() and setLr(), its state is saved by saveCheckpoint(); build the Constraint "
                    + "with OptimizerSpec...fused(false) for libtorch's optimizer");
        }
        return base;
    }

    /**
     * The spec the base optimizer was built from.
     *
     * @return the spec given to the constructor
     */
    public OptimizerSpec spec() {
        return spec;
    }

    /**
     * The param groups of the base optimizer; changing a group's learning rate reaches it.
     *
     * @return an unmodifiable list of the groups, in the base optimizer's order
     * @throws ConcurrentModificationException if another thread is inside a call on this constraint
     * @throws IllegalStateException if this constraint is closed
     */
    public List<ParamGroup> paramGroups() {
        enter();
        try {
            if (base == null) {
                return List.of(new ParamGroup(this, null));
            }
            OptimizerParamGroupVector groups = base.param_groups();
            List<ParamGroup> out = new ArrayList<>();
            for (long i = 0; i < groups.size(); i++) {
                out.add(new ParamGroup(this, groups.get(i)));
            }
            return Collections.unmodifiableList(out);
        } finally {
            exit();
        }
    }

    /**
     * Sets the learning rate of every param group.
     *
     * @param lr the learning rate (finite, &gt;= 0)
     * @throws IllegalArgumentException if {@code lr} is negative or not finite
     * @throws ConcurrentModificationException if another thread is inside a call on this constraint
     * @throws IllegalStateException if this constraint is closed
     */
    public void setLr(double lr) {
        for (ParamGroup g : paramGroups()) {
            g.setLr(lr);
        }
    }

    /**
     * The learning rate of the first param group.
     *
     * @return that group's learning rate
     * @throws ConcurrentModificationException if another thread is inside a call on this constraint
     * @throws IllegalStateException if this constraint is closed
     */
    public double lr() {
        return paramGroups().get(0).lr();
    }

    /**
     * The reference's {@code calculate_dr_grad_norm}: the L2 norm of each parameter's current
     * gradient (0 where there is none), summed per layer, a layer being two consecutive parameters
     * (weight and bias): key {@code i / 2}. Reads the device.
     *
     * @return the summed norms by layer index, in ascending order
     * @throws ConcurrentModificationException if another thread is inside a call on this constraint
     * @throws IllegalStateException if this constraint is closed
     */
    public Map<Integer, Double> gradNormPerLayer() {
        enter();
        try {
            return gradNormPerLayer(java.util.Arrays.asList(params));
        } finally {
            exit();
        }
    }

    /**
     * {@link #gradNormPerLayer()} over any parameter list, e.g. a model's; a parameter that does not require
     * grad counts as 0.
     *
     * @param params the parameters, in order
     * @return the summed norms by layer index ({@code i / 2}), in ascending order
     */
    public static Map<Integer, Double> gradNormPerLayer(Iterable<Tensor> params) {
        Map<Integer, Double> total = new TreeMap<>();
        int i = 0;
        try (PointerScope scope = new PointerScope()) {
            for (Tensor p : params) {
                Tensor g = p.grad();
                double norm = g.defined() && p.requires_grad() ? g.detach().norm().item_double() : 0.0;
                total.merge(i / 2, norm, Double::sum);
                i++;
            }
        }
        return total;
    }

    /**
     * The barrier's alpha.
     *
     * @return alpha (finite, &gt;= 0)
     */
    public double alpha() {
        return alpha;
    }

    /**
     * The barrier's beta.
     *
     * @return beta (finite, &gt;= 0)
     */
    public double beta() {
        return beta;
    }

    /**
     * Sets the barrier's alpha, used from the next {@link #secondStep}.
     *
     * @param alpha the new alpha (finite, &gt;= 0)
     * @throws IllegalArgumentException if {@code alpha} is negative or not finite
     */
    public void setAlpha(double alpha) {
        this.alpha = checkCoefficient("alpha", alpha);
    }

    /**
     * Sets the barrier's beta, used from the next {@link #secondStep}.
     *
     * @param beta the new beta (finite, &gt;= 0)
     * @throws IllegalArgumentException if {@code beta} is negative or not finite
     */
    public void setBeta(double beta) {
        this.beta = checkCoefficient("beta", beta);
    }

    /**
     * Whether losses and gradients are checked for NaN and infinity before anything is updated
     * (default true). The check reads two loss values and one flag on the host; on a GPU, turning it
     * off leaves a step without any host sync. The fused optimizer checks every step whatever this says, at
     * no cost: on the CPU as it steps, on a GPU on the device, where a non-finite step is skipped and reported
     * by {@link #checkSkippedSteps()} (and {@code runStep} reads no loss for the check).
     *
     * @param check true to check, false to skip the checks
     */
    public void setCheckFinite(boolean check) {
        this.checkFinite = check;
    }

    /**
     * Whether losses and gradients are checked for NaN and infinity (see {@link #setCheckFinite}).
     *
     * @return true if the checks are on
     */
    public boolean checkFinite() {
        return checkFinite;
    }

    /**
     * Attaches a {@link GradientSync} that {@link Text2Data#runStep} calls after each backward pass (data
     * parallelism: {@link org.text2data.dist.DataParallel}); {@code null} (the default) detaches it.
     *
     * @param sync the gradient sync, or null for none
     * @throws IllegalStateException if this constraint is closed
     */
    public void setGradientSync(GradientSync sync) {
        checkOpen();
        this.gradientSync = sync;
    }

    /**
     * The attached {@link GradientSync}.
     *
     * @return the sync, or {@code null} (a single-process run)
     */
    public GradientSync gradientSync() {
        return gradientSync;
    }

    /**
     * Whether {@link Text2Data#runStep} runs its two forward/backward passes at the same time, the unconditional one on
     * a worker thread this constraint owns and the conditional one on the caller's (default false: one after the other,
     * as the reference). The two passes are independent, and on the CPU most of a step: on 2 cores {@code runStep} with
     * them took 0.62-0.63x the plain two-pass step on the benchmark's transformer, 0.74-0.83x and 0.83-0.93x on its
     * deep and wide MLPs (four runs), and about the time of the passes in turn on the smallest, whose steps are a few
     * milliseconds of tiny operations (bench/NOTES.md, "Concurrent passes"). Each computes its gradients apart
     * ({@code torch::autograd::grad}), and the step takes them as the passes in turn would have left them: the same
     * values, and a failing pass changes nothing (after a failed step the gradients are those the step began with, zero
     * where they existed, not the unconditional pass's: no gradient was handed over). Only what a backward pass fills
     * is differentiated: a frozen or non-leaf tensor among the parameters gets no gradient, as in turn. While they run,
     * OpenBLAS's threads (where this library sized the pool) are split between them, process-wide: another thread's
     * GEMMs in those milliseconds get half too. After OpenBLAS work on all its threads outside the steps (an
     * evaluation, say), its idle workers spin for about 0.1 s before they sleep and slow the steps that follow them
     * ({@code OPENBLAS_THREAD_TIMEOUT=4} in the environment shortens that; bench/NOTES.md). Both passes' activations
     * are alive at once: a step's peak memory grows by one pass's activations.
     *
     * <p>Only for a model whose forward may run on two threads at once: one that changes no state while it runs. A
     * module in training mode with batch normalisation updates its running statistics from both threads, and random
     * operations (dropout) draw in an order that is no longer fixed, so such a step is not reproducible; a forward that
     * waits for a lock the calling thread holds around {@code runStep} never returns. The worker runs under the
     * caller's libtorch thread-local state (grad mode, autocast), TorchScript graph-optimizer setting, intra-op thread
     * count and flushing of denormal floats ({@code setFlushDenormal}), not under Java thread-locals or any other
     * per-thread setting. Tensor hooks run as in turn; hooks registered to run after a gradient is accumulated into
     * {@code .grad} do not (no pass accumulates). CPU only: libtorch runs every CUDA backward pass on one device
     * thread, so on a GPU only the forward passes could overlap (not tried); {@link CapturedStep} is the fast path
     * there. Parameters moved off the CPU afterwards get their passes in turn.
     *
     * <p>With one available processor ({@code availableProcessors()}: {@code taskset}, a container's CPU limit) the
     * passes share it; turning them on then logs a warning, once.
     *
     * @param on true to run the passes at the same time, false to run them in turn (and stop the worker)
     * @throws IllegalArgumentException if {@code on} and a parameter is not on the CPU
     * @throws java.util.ConcurrentModificationException if another thread is inside a call on this constraint
     * @throws IllegalStateException if this constraint is closed
     */
    public void setConcurrentPasses(boolean on) {
        enter();
        try {
            if (!on) {
                if (concurrentPasses != null) {
                    concurrentPasses.close();
                    concurrentPasses = null;
                }
                return;
            }
            for (int i = 0; i < params.length; i++) {
                if (!params[i].is_cpu()) {
                    throw new IllegalArgumentException("concurrent passes run on the CPU only, but parameter '"
                            + names[i] + "' is on " + Tensors.device(params[i]) + " (libtorch runs every CUDA backward "
                            + "pass on one device thread: there, CapturedStep is the fast path); nothing was changed");
                }
            }
            if (concurrentPasses == null) {
                concurrentPasses = new ConcurrentPasses();
                warnIfOneProcessor();
            }
        } finally {
            exit();
        }
    }

    private static final java.util.concurrent.atomic.AtomicBoolean ONE_PROCESSOR_WARNED =
            new java.util.concurrent.atomic.AtomicBoolean();

    /** Concurrent passes on one available processor share it: says so, once per class loader. */
    private static void warnIfOneProcessor() {
        int cores = Runtime.getRuntime().availableProcessors();
        if (cores < 2 && ONE_PROCESSOR_WARNED.compareAndSet(false, true)) {
            System.getLogger(Constraint.class.getName()).log(System.Logger.Level.WARNING,
                    "text2data: concurrent passes with {0} available processor: the two passes share it, so steps are "
                    + "no faster than in turn, and both passes'' activations are alive at once", cores);
        }
    }

    /**
     * Whether {@link Text2Data#runStep} runs its two passes at the same time (see {@link #setConcurrentPasses}).
     *
     * @return true if it does
     */
    public boolean concurrentPasses() {
        return concurrentPasses != null;
    }

    /** The worker for runStep's passes, or null when they run in turn. */
    ConcurrentPasses passes() {
        return concurrentPasses;
    }

    /**
     * What concurrent passes differentiate: the parameters a backward pass fills {@code .grad} of (leaves that
     * require grad; a frozen or non-leaf tensor gets none, and {@code torch::autograd::grad} refuses a frozen one),
     * as autograd takes its inputs, and each one's parameter index ({@code index} null: all of them, in order).
     *
     * @param inputs the tensors, in the caller's scope where they are a subset
     */
    record PassInputs(TensorVector inputs, int[] index) {
    }

    /**
     * This step's {@link PassInputs}, or null where no parameter can receive a gradient, or where a parameter is no
     * longer on the CPU (a module moved after {@link #setConcurrentPasses}): the passes then run in turn.
     */
    PassInputs passInputs() {
        int[] index = new int[params.length];
        int n = 0;
        for (int i = 0; i < params.length; i++) {
            if (!params[i].is_cpu()) {
                return null;
            }
            if (params[i].requires_grad() && params[i].is_leaf()) {
                index[n++] = i;
            }
        }
        if (n == params.length) {
            return new PassInputs(paramVector, null);
        }
        if (n == 0) {
            return null;
        }
        Tensor[] subset = new Tensor[n];
        for (int k = 0; k < n; k++) {
            subset[k] = params[index[k]];
        }
        return new PassInputs(new TensorVector(subset), Arrays.copyOf(index, n));
    }

    /**
     * Hands a pass's gradients ({@code torch::autograd::grad}'s, one per {@link PassInputs} input, undefined where the
     * pass did not reach it) to the parameters as that pass's backward would have: added into a gradient that exists (zeroed when
     * the step began), else installed as AccumulateGrad installs a new gradient: the tensor itself where it has the
     * parameter's layout and no other parameter has it, else a copy laid out as the parameter. (Autograd hands one
     * tensor to several parameters where they are summed, {@code W + D}: the step writes gradients in place.)
     */
    void installGradients(TensorVector grads, int[] index) {
        Set<Long> installed = new HashSet<>();
        try (PointerScope scope = new PointerScope(); NoGradGuard noGrad = new NoGradGuard()) {
            for (int k = 0; k < grads.size(); k++) {
                int i = index == null ? k : index[k];
                Tensor g = grads.get(k);
                if (!g.defined()) {
                    continue;
                }
                Tensor current = params[i].grad();
                if (current.defined()) {
                    current.add_(g);
                    continue;
                }
                boolean layout = (g.is_contiguous() && params[i].is_contiguous())
                        || Arrays.equals(Tensors.strides(g), Tensors.strides(params[i]));
                long address = Tensors.address(g);
                if (layout && (g.numel() == 0 || installed.add(address))) {
                    params[i].mutable_grad().put(g);
                } else {
                    params[i].mutable_grad().put(torch.empty_like(params[i]).copy_(g));
                }
            }
        }
    }

    /**
     * The engine computing the projection.
     *
     * @return {@code plain}, {@code fused-cpu} or {@code fused-cuda}
     */
    public String engineName() {
        return engine.name();
    }

    /**
     * The parameters, in order: the constraint's own handles of the caller's tensors (same storage),
     * valid until {@link #close()}.
     *
     * @return an unmodifiable list of the parameters
     */
    public List<Tensor> parameters() {
        return List.of(params);
    }

    /**
     * Parameter names (state-dict names where given, else {@code #i}).
     *
     * @return an unmodifiable list of names, in parameter order
     */
    public List<String> parameterNames() {
        return List.of(names);
    }

    // ------------------------------------------------------------------ checkpoints (see Checkpoint)

    /**
     * Writes this constraint's parameters, base-optimizer state (moments, step counts, momentum buffers, every
     * group's learning rate) and alpha, beta and finiteness-check flag to {@code file}, atomically
     * ({@link Checkpoint#save(Path, Constraint)}).
     *
     * @param file the checkpoint file to create or replace
     * @throws java.io.IOException if the file cannot be written
     */
    public void saveCheckpoint(java.nio.file.Path file) throws java.io.IOException {
        Checkpoint.save(file, this);
    }

    /**
     * Restores what {@link #saveCheckpoint} wrote, all or nothing: a file that is damaged or does not fit these
     * parameters and this optimizer is refused with a message saying why, and nothing changes
     * ({@link Checkpoint#restore(Constraint)}).
     *
     * @param file a checkpoint written by {@link #saveCheckpoint}
     * @throws IllegalArgumentException if the file is missing, unreadable, damaged, or does not match these
     *                                  parameters and this optimizer
     */
    public void loadCheckpoint(java.nio.file.Path file) {
        try (Checkpoint c = Checkpoint.read(file)) {
            c.restore(this);
        }
    }

    /**
     * The per-parameter records this constraint passes to its engine: its own, not copies (a {@link CapturedStep}
     * captures with them and compares their optimizer-state addresses at each replay; tests read them).
     */
    ParamState[] paramStates() {
        return states;
    }

    boolean isClosed() {
        return closed;
    }

    /**
     * Releases the base optimizer, the engine and the per-parameter state (kept gradients, optimizer state).
     * Idempotent. Called while another thread is inside a step, it lets that step finish and the resources are
     * released when it returns; every later call is refused.
     */
    @Override
    public void close() {
        NonFiniteException skipped = null;
        if (!closed && fused != null && engine instanceof FusedEngine fe && fe.device() >= 0) {
            try {
                checkSkippedSteps(); // the last read of the device's step status: a skipped step is not lost
            } catch (NonFiniteException e) {
                skipped = e;
            } catch (RuntimeException e) {
                // another thread inside, or the device failing: closing goes on
            }
        }
        closed = true;
        releaseIfClosed();
        if (skipped != null) {
            throw skipped;
        }
    }

    // ------------------------------------------------------------------ the optimizer's state, for Checkpoint

    /** The optimizer's state and param groups, as libtorch's serialization names them, whichever optimizer steps. */
    Checkpoint.OptimizerState optimizerState() {
        if (base != null) {
            return Checkpoint.readOptimizer(base, params.length);
        }
        List<Checkpoint.Group> groups = new ArrayList<>();
        // libtorch's options, as it writes them, from an optimizer of the same spec (it allocates no state)
        try (Optimizer scratch = spec.create(paramVector);
             Checkpoint.OptimizerState options = Checkpoint.readOptimizer(scratch, params.length)) {
            for (Checkpoint.Group g : options.groups()) {
                com.google.gson.JsonObject o = g.options().deepCopy();
                o.addProperty("lr", fused.lr());
                groups.add(new Checkpoint.Group(fused.lr(), g.size(), o));
            }
        }
        List<Checkpoint.ParamState> perParam = new ArrayList<>();
        try (PointerScope scope = new PointerScope()) {
            for (ParamState st : states) {
                Map<String, Long> ints = new TreeMap<>();
                Map<String, Tensor> live = st.view(fused, ints);
                if (live == null) {
                    perParam.add(null);
                    continue;
                }
                Map<String, Tensor> copies = new TreeMap<>();
                for (Map.Entry<String, Tensor> e : live.entrySet()) {
                    Tensor c = e.getValue().detach().clone();
                    c.retainReference(); // outlives the scope; closed with the OptimizerState
                    copies.put(e.getKey(), c);
                }
                perParam.add(new Checkpoint.ParamState(ints, copies));
            }
        }
        return new Checkpoint.OptimizerState(perParam, groups);
    }

    /** What a checkpoint's state of parameter i must hold for the fused optimizer: null if it fits, else why not. */
    String fusedStateMismatch(Checkpoint.ParamState saved) {
        java.util.Set<String> want = new java.util.TreeSet<>(List.of(fused.stateNames()));
        java.util.Set<String> got = new java.util.TreeSet<>(saved.tensors().keySet());
        if (!want.equals(got)) {
            return "holds " + got + ", the fused " + spec.type() + " keeps " + want;
        }
        if (fused.kind() != FusedOptimizer.Kind.SGD && !saved.ints().containsKey("step")) {
            return "has no step count";
        }
        return null;
    }

    /** Replaces the fused optimizer's state by a checkpoint's (checked to fit by Checkpoint.restore). */
    void loadFusedState(List<Checkpoint.ParamState> saved) {
        for (int i = 0; i < params.length; i++) {
            Checkpoint.ParamState s = saved.get(i);
            // libtorch's SGD keeps no step count: a momentum buffer means a first step was taken
            long step = s == null ? 0 : s.ints().getOrDefault("step", 1L);
            states[i].load(fused, step, s == null ? null : s.tensors(), params[i]);
        }
    }

    /** Releases the native resources once, if closed, unless another thread is inside a call. */
    private void releaseIfClosed() {
        Thread me = Thread.currentThread();
        while (closed && !released && user.compareAndSet(null, me)) {
            try {
                if (!released) {
                    released = true;
                    engine.close();
                    if (base != null) {
                        base.close();
                    }
                    for (ParamState st : states) {
                        st.close();
                    }
                    if (concurrentPasses != null) {
                        concurrentPasses.close();
                    }
                    paramVector.close();
                    for (Tensor p : params) {
                        p.close(); // the constraint's own handles; the parameters stay with their owner
                    }
                }
            } finally {
                user.set(null);
            }
        }
    }

    void checkOpen() {
        if (closed) {
            throw new IllegalStateException("this Constraint is closed");
        }
    }

    /**
     * Enters a call that touches native state: refuses a second thread while one is inside (a step
     * from two threads at once crashes libtorch or interleaves two steps), and a closed constraint.
     * Re-entrant for the thread inside. Every {@code enter()} is paired with {@link #exit()} in a
     * {@code finally}.
     */
    void enter() {
        Thread me = Thread.currentThread();
        if (user.get() == me) {
            depth++;
            return;
        }
        if (closed) {
            throw new IllegalStateException("this Constraint is closed");
        }
        if (!user.compareAndSet(null, me)) {
            Thread other = user.get();
            throw new ConcurrentModificationException("this Constraint is in use by thread '"
                    + (other == null ? "another thread" : other.getName()) + "' (thread '" + me.getName()
                    + "' was refused and nothing was changed): one training loop per Constraint,"
                    + " a step at a time");
        }
        depth = 1;
        if (closed) {
            exit();
            throw new IllegalStateException("this Constraint is closed");
        }
    }

    /** Leaves a call entered with {@link #enter()}; the outermost exit releases a constraint closed meanwhile. */
    void exit() {
        if (--depth > 0) {
            return;
        }
        user.set(null);
        if (closed) {
            releaseIfClosed();
        }
    }

    /** The number of steps the base optimizer has taken. */
    long steps() {
        return steps;
    }

    /** Whether runStep has already found that this model's passes reach these parameters. */
    boolean verified(Object model) {
        return verifiedModel.get() == model;
    }

    void setVerified(Object model) {
        verifiedModel = new WeakReference<>(model);
    }

    /**
     * For each parameter, the version of its gradient and the gradient's data address (or -1, 0 when
     * it has none): a backward that reaches the parameter changes one of them (it accumulates in place,
     * which bumps the version, or installs a new gradient).
     */
    long[] gradStamps() {
        long[] stamps = new long[2 * params.length];
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                Tensor g = params[i].grad();
                if (g.defined()) {
                    stamps[2 * i] = g.__dispatch__version();
                    stamps[2 * i + 1] = Tensors.address(g);
                } else {
                    stamps[2 * i] = -1;
                }
            }
        }
        return stamps;
    }

    /**
     * Refuses the same tensor given twice (it would be stepped twice): the same data, shape, strides and
     * dtype, or tensors with an element at the same memory location (overlapping contiguous tensors; strided views,
     * element by element where their spans overlap), and a tensor whose own elements share memory (expanded).
     */
    static void checkDistinct(String[] names, Tensor[] params) {
        Map<String, Integer> seen = new HashMap<>();
        List<long[]> spans = new ArrayList<>(); // first byte, end byte, index: the bytes a tensor's elements span
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                Tensor t = params[i];
                long address = t.numel() == 0 ? 0 : Tensors.address(t);
                if (address == 0) {
                    continue;
                }
                long[] shape = t.shape();
                long[] strides = Tensors.strides(t);
                String key = address + " " + java.util.Arrays.toString(shape) + " "
                        + java.util.Arrays.toString(strides) + " " + t.scalar_type().value;
                Integer j = seen.putIfAbsent(key, i);
                if (j != null) {
                    throw new IllegalArgumentException("parameters '" + names[j] + "' and '" + names[i]
                            + "' are the same tensor: it would be stepped twice (give each parameter once)");
                }
                if (!t.is_contiguous() && !stridesApart(shape, strides) && sharesElements(t, address, null, 0)) {
                    throw new IllegalArgumentException("parameter '" + names[i] + "' has elements that share memory "
                            + "(an expanded view, or one with overlapping strides): a step would write them several "
                            + "times (give it memory of its own, e.g. t.clone())");
                }
                long last = 0; // the offset of its last element, in elements
                for (int d = 0; d < shape.length; d++) {
                    last += (shape[d] - 1) * strides[d];
                }
                spans.add(new long[] {address, address + (last + 1) * t.element_size(), i});
            }
            spans.sort((a, b) -> Long.compare(a[0], b[0]));
            List<long[]> open = new ArrayList<>(); // spans that started before cur and still reach into it
            for (long[] cur : spans) {
                open.removeIf(prev -> prev[1] <= cur[0]);
                for (long[] prev : open) {
                    Tensor a = params[(int) prev[2]];
                    Tensor b = params[(int) cur[2]];
                    boolean dense = a.is_contiguous() && b.is_contiguous();
                    if (dense || sharesElements(a, prev[0], b, cur[0])) {
                        throw new IllegalArgumentException("parameters '" + names[(int) prev[2]] + "' and '"
                                + names[(int) cur[2]] + "' share memory: it would be stepped twice (give each "
                                + "parameter once)");
                    }
                }
                open.add(cur);
            }
        }
    }

    /** The largest span {@link #sharesElements} counts element by element (16M elements: about 300 MB at most). */
    private static final long MAX_COUNTED_SPAN = 1L << 24;

    /**
     * Whether two views with the same strides share an element, decided from their index ranges, or null when that
     * cannot be decided this way (other strides, or offsets that do not decompose uniquely). Their elements are
     * {@code a + sum(i_k s_k)} and {@code a + delta + sum(j_k s_k)}; they meet where {@code delta = sum(d_k s_k)}
     * with {@code d_k = i_k - j_k} in {@code [-(m_k - 1), n_k - 1]}. Taken by increasing stride, when each stride is
     * larger than the reach of those below it, at most one {@code d_k} fits per dimension, from the largest down:
     * the slices of one tensor's rows or columns (a fused weight split into parameters) are decided in O(dims).
     */
    static Boolean sliceBoxesShare(long[] shapeA, long[] shapeB, long[] stridesA, long[] stridesB, long delta) {
        if (shapeA.length != shapeB.length || !Arrays.equals(stridesA, stridesB)) {
            return null;
        }
        int dims = shapeA.length;
        Integer[] order = new Integer[dims];
        for (int d = 0; d < dims; d++) {
            if (stridesA[d] <= 0 || shapeA[d] <= 0 || shapeB[d] <= 0) {
                return null;
            }
            order[d] = d;
        }
        Arrays.sort(order, (x, y) -> Long.compare(stridesA[x], stridesA[y]));
        long[] below = new long[dims + 1]; // reach below rank r, up and down: sum over lower ranks of (n-1) s, (m-1) s
        long[] belowDown = new long[dims + 1];
        for (int r = 0; r < dims; r++) {
            int d = order[r];
            if (stridesA[d] <= below[r] + belowDown[r]) {
                return null; // the ranges below this stride overlap it: not decided here
            }
            below[r + 1] = Math.addExact(below[r], Math.multiplyExact(shapeA[d] - 1, stridesA[d]));
            belowDown[r + 1] = Math.addExact(belowDown[r], Math.multiplyExact(shapeB[d] - 1, stridesA[d]));
        }
        long rest = delta;
        for (int r = dims - 1; r >= 0; r--) {
            int d = order[r];
            long s = stridesA[d];
            long k = Math.ceilDiv(rest - below[r], s); // the one d_k that can leave rest within the ranks below
            if (k < -(shapeB[d] - 1) || k > shapeA[d] - 1) {
                return false;
            }
            rest -= k * s;
            if (rest < -belowDown[r] || rest > below[r]) {
                return false;
            }
        }
        return rest == 0;
    }

    /**
     * Whether a view's strides keep its elements apart (a sufficient test, no memory touched): taken by increasing
     * stride, each stride is larger than the span of the dimensions before it. True for permuted, sliced and
     * stepped views of one tensor; false for expanded ones (stride 0), where {@link #sharesElements} decides.
     */
    private static boolean stridesApart(long[] shape, long[] strides) {
        Integer[] order = new Integer[shape.length];
        for (int d = 0; d < order.length; d++) {
            order[d] = d;
        }
        Arrays.sort(order, (x, y) -> Long.compare(strides[x], strides[y]));
        long reach = 0; // the offset of the last element of the dimensions taken so far
        for (int d : order) {
            if (shape[d] == 1) {
                continue;
            }
            if (strides[d] <= reach) {
                return false;
            }
            reach += (shape[d] - 1) * strides[d];
        }
        return true;
    }

    /**
     * Whether two strided views (or one, {@code b} null) have an element at the same memory location: each element's
     * index in the bytes the two span, counted. Only for views whose spans overlap, which are rare: it costs one
     * counter per element of the span. Views of different element sizes, or not on one element grid, count as
     * sharing.
     */
    private static boolean sharesElements(Tensor a, long aAddress, Tensor b, long bAddress) {
        long es = a.element_size();
        long lo = b == null ? aAddress : Math.min(aAddress, bAddress);
        if (b != null && (b.element_size() != es || (aAddress - lo) % es != 0 || (bAddress - lo) % es != 0)) {
            return true;
        }
        if (b != null) {
            Boolean boxes = sliceBoxesShare(a.shape(), b.shape(), Tensors.strides(a), Tensors.strides(b),
                    (bAddress - aAddress) / es);
            if (boxes != null) {
                return boxes;
            }
        }
        long span = 0;
        for (Tensor t : b == null ? new Tensor[] {a} : new Tensor[] {a, b}) {
            long[] shape = t.shape();
            long last = 0;
            for (int d = 0; d < shape.length; d++) {
                last += (shape[d] - 1) * t.stride(d);
            }
            span = Math.max(span, ((t == a ? aAddress : bAddress) - lo) / es + last + 1);
        }
        if (span > MAX_COUNTED_SPAN) { // counting would take 8 bytes or more per element of the span
            throw new IllegalArgumentException("strided parameters over " + span + " elements of one tensor whose "
                    + "elements this check cannot tell apart cheaply (different strides, or an expanded view): give "
                    + "them as tensors of their own (e.g. t.clone())");
        }
        try (PointerScope scope = new PointerScope()) {
            Tensor positions = torch.arange(new Scalar(span), new TensorOptions(torch.ScalarType.Long));
            Tensor at = positions.as_strided(a.shape(), Tensors.strides(a), new LongOptional((aAddress - lo) / es))
                    .reshape(-1);
            if (b != null) {
                Tensor bt = positions.as_strided(b.shape(), Tensors.strides(b), new LongOptional((bAddress - lo) / es))
                        .reshape(-1);
                at = torch.cat(new TensorVector(at, bt));
            }
            return torch.bincount(at, new TensorOptional(), span).max().item_long() > 1;
        }
    }

    static double checkCoefficient(String what, double v) {
        if (!Double.isFinite(v) || v < 0) {
            throw new IllegalArgumentException(what + " must be a finite number >= 0, got " + v);
        }
        return v;
    }

    static void checkGConstraint(double g) {
        if (!Double.isFinite(g) || g < 0) {
            throw new IllegalArgumentException("gConstraint must be a finite number >= 0, got " + g);
        }
    }

    /** One param group of the base optimizer (the fused optimizer has one, over every parameter). */
    public static final class ParamGroup {
        private final Constraint owner;
        private final OptimizerParamGroup group;

        ParamGroup(Constraint owner, OptimizerParamGroup group) {
            this.owner = owner;
            this.group = group;
        }

        /**
         * The group's learning rate.
         *
         * @return the learning rate in the group's options
         */
        public double lr() {
            owner.enter();
            try {
                return group == null ? owner.fused.lr() : group.options().get_lr();
            } finally {
                owner.exit();
            }
        }

        /**
         * Sets the group's learning rate.
         *
         * @param lr the learning rate (finite, &gt;= 0)
         * @throws IllegalArgumentException if {@code lr} is negative or not finite
         */
        public void setLr(double lr) {
            OptimizerSpec.nonNegative("lr", lr);
            owner.enter();
            try {
                if (group == null) {
                    owner.fused = owner.fused.withLr(lr); // read by the next fused step
                } else {
                    group.options().set_lr(lr);
                }
            } finally {
                owner.exit();
            }
        }

        /**
         * How many parameters the group holds.
         *
         * @return the number of parameter tensors in the group
         */
        public long size() {
            owner.enter();
            try {
                return group == null ? owner.params.length : group.params().size();
            } finally {
                owner.exit();
            }
        }
    }
}

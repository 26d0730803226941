package org.text2data;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Supplier;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.OptimizerParamGroup;
import org.bytedeco.pytorch.OptimizerParamGroupVector;
import org.bytedeco.pytorch.StringTensorDict;
import org.bytedeco.pytorch.StringTensorDictItem;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.text2data.engine.Engines;
import org.text2data.engine.NonFiniteGradientException;
import org.text2data.engine.ProjectionEngine;

/**
 * Text2Data's constrained optimizer: a base optimizer (libtorch's SGD, Adam, AdamW, RMSprop or
 * Adagrad) plus the dynamic-barrier projection that keeps the unconditional loss near
 * {@code gConstraint} while the conditional loss is minimised.
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
 * handles, the base optimizer's state and the engine's buffers; the parameters themselves stay with
 * their owner. Letting a constraint go without closing it leaves that native memory to the garbage
 * collector, which does not see its size: close it (try-with-resources).
 *
 * Like the Python reference it offers {@link #zeroGrad}, {@link #firstStep}, {@link #secondStep},
 * {@link #step(Supplier, double, double)}, the base optimizer and its param groups, and the per-layer
 * gradient-norm diagnostic. Not thread-safe; one constraint per training loop.
 */
public final class Constraint implements AutoCloseable {

    private final Tensor[] params;
    private final String[] names;
    private final TensorVector paramVector;
    private final Optimizer base;
    private final OptimizerSpec spec;
    private final ProjectionEngine engine;
    private double alpha;
    private double beta;
    private boolean checkFinite = true;
    private boolean closed;

    /**
     * The parameters of a bytedeco module that require grad, named as in its {@code named_parameters()},
     * with alpha = beta = 1 and the default engine.
     */
    public Constraint(Module module, OptimizerSpec base) {
        this(module, base, 1.0, 1.0, Engine.AUTO);
    }

    /** The parameters of a bytedeco module that require grad (see above), with the default engine. */
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
     */
    public Constraint(Module module, OptimizerSpec base, double alpha, double beta, Engine engine) {
        this(Taken.of(module), base, alpha, beta, engine);
    }

    /**
     * A bytedeco {@code TensorVector} (e.g. {@code module.parameters()}): the tensors that require grad,
     * named {@code #i} by their position in the vector; alpha = beta = 1 and the default engine. The
     * vector may be closed or collected afterwards.
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
     */
    public Constraint(TensorVector params, OptimizerSpec base, double alpha, double beta, Engine engine) {
        this(Taken.of(params), base, alpha, beta, engine);
    }

    /**
     * A bytedeco {@code StringTensorDict} (e.g. {@code module.named_parameters()}): the tensors that
     * require grad, with their names; alpha = beta = 1 and the default engine. The dict may be closed or
     * collected afterwards.
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
     */
    public Constraint(StringTensorDict namedParams, OptimizerSpec base, double alpha, double beta, Engine engine) {
        this(Taken.of(namedParams), base, alpha, beta, engine);
    }

    /** Any parameter list (taken as it is, named {@code #i}), with alpha = beta = 1 and the default engine. */
    public Constraint(Iterable<Tensor> params, OptimizerSpec base) {
        this(params, base, 1.0, 1.0, Engine.AUTO);
    }

    /** Any parameter list (taken as it is, named {@code #i}), with the default engine. */
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
     */
    public Constraint(Iterable<Tensor> params, OptimizerSpec base, double alpha, double beta, Engine engine) {
        this(Taken.of(params), base, alpha, beta, engine);
    }

    /** Named parameters (see below) with alpha = beta = 1 and the default engine. */
    public Constraint(Map<String, Tensor> namedParams, OptimizerSpec base) {
        this(namedParams, base, 1.0, 1.0, Engine.AUTO);
    }

    /** Named parameters (see below) with the default engine. */
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
     */
    public Constraint(Map<String, Tensor> namedParams, OptimizerSpec base, double alpha, double beta, Engine engine) {
        this(Taken.of(namedParams), base, alpha, beta, engine);
    }

    private Constraint(Taken taken, OptimizerSpec base, double alpha, double beta, Engine engine) {
        boolean ok = false;
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
            }
            if (taken.params.isEmpty()) {
                throw new IllegalArgumentException(taken.skipped > 0
                        ? "no parameters to optimize: all " + taken.skipped + " have requires_grad = false"
                        : "no parameters to optimize");
            }
            this.params = taken.params.toArray(new Tensor[0]);
            this.names = taken.names.toArray(new String[0]);
            this.paramVector = new TensorVector(this.params);
            this.spec = base;
            this.base = base.create(paramVector);
            this.engine = Engines.create(engine.toString(), this.params);
            ok = true;
        } finally {
            if (!ok) {
                taken.release();
            }
        }
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

    /** Zeroes every existing gradient in place (PyTorch 1.13's {@code zero_grad()}, which the reference uses). */
    public void zeroGrad() {
        checkOpen();
        try (PointerScope scope = new PointerScope()) {
            for (Tensor p : params) {
                Tensor g = p.grad();
                if (g.defined()) {
                    g.zero_();
                }
            }
        }
    }

    /**
     * Keeps the current gradients as constraint gradients (the gradient of the unconditional loss),
     * and zeroes the gradients when asked.
     */
    public void firstStep(boolean zeroGrad) {
        checkOpen();
        engine.firstStep(zeroGrad);
    }

    /**
     * Projects the current gradients (of the conditional loss) so that, to first order, the
     * unconditional loss does not rise above the barrier. {@code gValue} is the unconditional loss
     * read in this step, as a 0-dim tensor on the parameters' device. Does not step the base optimizer.
     *
     * @return how many parameter tensors were projected
     */
    public int secondStep(Tensor gValue, double gConstraint) {
        checkOpen();
        checkGConstraint(gConstraint);
        if (gValue == null || !gValue.defined() || gValue.numel() != 1) {
            throw new IllegalArgumentException("gValue must be a one-element tensor");
        }
        if (!engine.hasConstraintGrads()) {
            throw new IllegalStateException("secondStep() before firstStep(): no constraint gradients kept");
        }
        try {
            return engine.secondStep(gValue, gConstraint, alpha, beta, checkFinite);
        } catch (NonFiniteGradientException e) {
            throw new NonFiniteException("parameter '" + names[e.tensorIndex()] + "': " + e.getMessage()
                    + "; nothing was updated");
        }
    }

    /** {@link #secondStep(Tensor, double)} with the unconditional loss as a number. */
    public int secondStep(double gValue, double gConstraint) {
        checkOpen();
        if (!Double.isFinite(gValue)) {
            throw new NonFiniteException("unconditional loss gValue is " + gValue + "; nothing was updated");
        }
        try (PointerScope scope = new PointerScope()) {
            return secondStep(Tensors.scalarLike(params[0], gValue), gConstraint);
        }
    }

    /**
     * The whole constrained update, as an optimizer's {@code step}: keeps the current gradients (of the
     * unconditional loss {@code gValue}, already backpropagated) as constraint gradients, zeroes the
     * gradients, runs {@code closure} (which must compute the conditional loss and call backward),
     * projects, and steps the base optimizer. Unlike the reference's {@code step}, which leaves the base
     * step to the caller, this one takes it, as every PyTorch optimizer's {@code step} does.
     *
     * @return what the closure returned
     */
    public Tensor step(Supplier<Tensor> closure, double gValue, double gConstraint) {
        checkOpen();
        if (closure == null) {
            throw new IllegalArgumentException("step() requires a closure");
        }
        checkGConstraint(gConstraint);
        if (!Double.isFinite(gValue)) {
            throw new NonFiniteException("unconditional loss gValue is " + gValue + "; nothing was updated");
        }
        firstStep(true);
        Tensor loss = closure.get();
        secondStep(gValue, gConstraint);
        stepBase();
        return loss;
    }

    /** Steps the base optimizer with the current gradients. */
    public void stepBase() {
        checkOpen();
        try (PointerScope scope = new PointerScope()) {
            base.step();
        }
    }

    /** The libtorch optimizer underneath (its state, its options). */
    public Optimizer baseOptimizer() {
        checkOpen();
        return base;
    }

    /** The spec the base optimizer was built from. */
    public OptimizerSpec spec() {
        return spec;
    }

    /** The param groups of the base optimizer; changing a group's learning rate reaches it. */
    public List<ParamGroup> paramGroups() {
        checkOpen();
        OptimizerParamGroupVector groups = base.param_groups();
        List<ParamGroup> out = new ArrayList<>();
        for (long i = 0; i < groups.size(); i++) {
            out.add(new ParamGroup(groups.get(i)));
        }
        return Collections.unmodifiableList(out);
    }

    /** Sets the learning rate of every param group. */
    public void setLr(double lr) {
        for (ParamGroup g : paramGroups()) {
            g.setLr(lr);
        }
    }

    /** The learning rate of the first param group. */
    public double lr() {
        return paramGroups().get(0).lr();
    }

    /**
     * The reference's {@code calculate_dr_grad_norm}: the L2 norm of each parameter's current
     * gradient (0 where there is none), summed per layer, a layer being two consecutive parameters
     * (weight and bias): key {@code i / 2}. Reads the device.
     */
    public Map<Integer, Double> gradNormPerLayer() {
        checkOpen();
        return gradNormPerLayer(java.util.Arrays.asList(params));
    }

    /** {@link #gradNormPerLayer()} over any parameter list, e.g. a model's. */
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

    public double alpha() {
        return alpha;
    }

    public double beta() {
        return beta;
    }

    public void setAlpha(double alpha) {
        this.alpha = checkCoefficient("alpha", alpha);
    }

    public void setBeta(double beta) {
        this.beta = checkCoefficient("beta", beta);
    }

    /**
     * Whether losses and gradients are checked for NaN and infinity before anything is updated
     * (default true). The check reads two loss values and one flag on the host; on a GPU, turning it
     * off leaves a step without any host sync.
     */
    public void setCheckFinite(boolean check) {
        this.checkFinite = check;
    }

    public boolean checkFinite() {
        return checkFinite;
    }

    /** The engine computing the projection: {@code plain}, {@code fused-cpu} or {@code fused-cuda}. */
    public String engineName() {
        return engine.name();
    }

    /**
     * The parameters, in order: the constraint's own handles of the caller's tensors (same storage),
     * valid until {@link #close()}.
     */
    public List<Tensor> parameters() {
        return List.of(params);
    }

    /** Parameter names (state-dict names where given, else {@code #i}). */
    public List<String> parameterNames() {
        return List.of(names);
    }

    boolean isClosed() {
        return closed;
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        engine.close();
        base.close();
        paramVector.close();
        for (Tensor p : params) {
            p.close(); // the constraint's own handles; the parameters stay with their owner
        }
    }

    void checkOpen() {
        if (closed) {
            throw new IllegalStateException("this Constraint is closed");
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

    /** One param group of the base optimizer. */
    public static final class ParamGroup {
        private final OptimizerParamGroup group;

        ParamGroup(OptimizerParamGroup group) {
            this.group = group;
        }

        public double lr() {
            return group.options().get_lr();
        }

        public void setLr(double lr) {
            OptimizerSpec.nonNegative("lr", lr);
            group.options().set_lr(lr);
        }

        public long size() {
            return group.params().size();
        }
    }
}

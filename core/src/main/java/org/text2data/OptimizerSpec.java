package org.text2data;

import java.util.Locale;

import org.bytedeco.pytorch.Adagrad;
import org.bytedeco.pytorch.AdagradOptions;
import org.bytedeco.pytorch.Adam;
import org.bytedeco.pytorch.AdamOptions;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.RMSprop;
import org.bytedeco.pytorch.RMSpropOptions;
import org.bytedeco.pytorch.SGD;
import org.bytedeco.pytorch.SGDOptions;
import org.bytedeco.pytorch.TensorVector;

/**
 * Which of libtorch's optimizers the constraint wraps, and its options, with PyTorch's names and
 * defaults: {@code OptimizerSpec.adam(1e-3).weightDecay(0.01)}. Immutable; every {@code with}-style
 * call returns a copy. Values are checked when set.
 */
public final class OptimizerSpec {

    /** The base optimizers offered. */
    public enum Type {
        /** Stochastic gradient descent, {@code torch.optim.SGD}. */
        SGD,
        /** Adam, {@code torch.optim.Adam}. */
        ADAM,
        /** Adam with decoupled weight decay, {@code torch.optim.AdamW}. */
        ADAMW,
        /** RMSprop, {@code torch.optim.RMSprop}. */
        RMSPROP,
        /** Adagrad, {@code torch.optim.Adagrad}. */
        ADAGRAD;

        /**
         * Parses {@code sgd}, {@code adam}, {@code adamw}, {@code rmsprop}, {@code adagrad} (any case, surrounding
         * blanks ignored).
         *
         * @param name the optimizer's name
         * @return the optimizer type of that name
         * @throws IllegalArgumentException if {@code name} names none of them
         */
        public static Type parse(String name) {
            for (Type t : values()) {
                if (t.name().equalsIgnoreCase(name.trim())) {
                    return t;
                }
            }
            throw new IllegalArgumentException("unknown optimizer '" + name
                    + "': expected one of sgd, adam, adamw, rmsprop, adagrad");
        }

        @Override
        public String toString() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    private final Type type;
    private final double lr;
    private final double weightDecay;
    private final double momentum;
    private final double dampening;
    private final boolean nesterov;
    private final double beta1;
    private final double beta2;
    private final double eps;
    private final boolean amsgrad;
    private final double rmsAlpha;
    private final boolean centered;
    private final double lrDecay;
    private final double initialAccumulatorValue;
    /** null: fused where available; true: required; false: libtorch's optimizer. */
    private final Boolean fused;

    private OptimizerSpec(Type type, double lr, double weightDecay, double momentum, double dampening,
                          boolean nesterov, double beta1, double beta2, double eps, boolean amsgrad,
                          double rmsAlpha, boolean centered, double lrDecay, double initialAccumulatorValue,
                          Boolean fused) {
        this.type = type;
        this.lr = lr;
        this.weightDecay = weightDecay;
        this.momentum = momentum;
        this.dampening = dampening;
        this.nesterov = nesterov;
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.amsgrad = amsgrad;
        this.rmsAlpha = rmsAlpha;
        this.centered = centered;
        this.lrDecay = lrDecay;
        this.initialAccumulatorValue = initialAccumulatorValue;
        this.fused = fused;
    }

    private static OptimizerSpec of(Type type, double lr, double weightDecay, double eps) {
        return new OptimizerSpec(type, nonNegative("lr", lr), weightDecay, 0, 0, false, 0.9, 0.999, eps,
                false, 0.99, false, 0, 0, null);
    }

    /**
     * {@code torch.optim.SGD(lr)}: momentum 0, dampening 0, no Nesterov, no weight decay.
     *
     * @param lr the learning rate, a finite number &gt;= 0
     * @return the spec
     * @throws IllegalArgumentException if {@code lr} is negative or not finite
     */
    public static OptimizerSpec sgd(double lr) {
        return of(Type.SGD, lr, 0, 0);
    }

    /**
     * {@code torch.optim.Adam(lr)}: betas (0.9, 0.999), eps 1e-8, no weight decay.
     *
     * @param lr the learning rate, a finite number &gt;= 0
     * @return the spec
     * @throws IllegalArgumentException if {@code lr} is negative or not finite
     */
    public static OptimizerSpec adam(double lr) {
        return of(Type.ADAM, lr, 0, 1e-8);
    }

    /**
     * {@code torch.optim.AdamW(lr)}: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
     *
     * @param lr the learning rate, a finite number &gt;= 0
     * @return the spec
     * @throws IllegalArgumentException if {@code lr} is negative or not finite
     */
    public static OptimizerSpec adamw(double lr) {
        return of(Type.ADAMW, lr, 0.01, 1e-8);
    }

    /**
     * {@code torch.optim.RMSprop(lr)}: alpha 0.99, eps 1e-8, no momentum, not centered.
     *
     * @param lr the learning rate, a finite number &gt;= 0
     * @return the spec
     * @throws IllegalArgumentException if {@code lr} is negative or not finite
     */
    public static OptimizerSpec rmsprop(double lr) {
        return of(Type.RMSPROP, lr, 0, 1e-8);
    }

    /**
     * {@code torch.optim.Adagrad(lr)}: no lr decay, initial accumulator 0, eps 1e-10.
     *
     * @param lr the learning rate, a finite number &gt;= 0
     * @return the spec
     * @throws IllegalArgumentException if {@code lr} is negative or not finite
     */
    public static OptimizerSpec adagrad(double lr) {
        return of(Type.ADAGRAD, lr, 0, 1e-10);
    }

    /**
     * The named optimizer with PyTorch's defaults (see {@link Type#parse}).
     *
     * @param type the optimizer's name: {@code sgd}, {@code adam}, {@code adamw}, {@code rmsprop} or {@code adagrad}
     * @param lr the learning rate, a finite number &gt;= 0
     * @return the spec
     * @throws IllegalArgumentException if {@code type} is unknown or {@code lr} is negative or not finite
     */
    public static OptimizerSpec of(String type, double lr) {
        return switch (Type.parse(type)) {
            case SGD -> sgd(lr);
            case ADAM -> adam(lr);
            case ADAMW -> adamw(lr);
            case RMSPROP -> rmsprop(lr);
            case ADAGRAD -> adagrad(lr);
        };
    }

    /**
     * A copy with learning rate {@code v}.
     *
     * @param v the learning rate, a finite number &gt;= 0
     * @return the copy
     * @throws IllegalArgumentException if {@code v} is negative or not finite
     */
    public OptimizerSpec lr(double v) {
        return new OptimizerSpec(type, nonNegative("lr", v), weightDecay, momentum, dampening, nesterov, beta1,
                beta2, eps, amsgrad, rmsAlpha, centered, lrDecay, initialAccumulatorValue, fused);
    }

    /**
     * A copy with weight decay (L2 penalty; decoupled for AdamW) {@code v}.
     *
     * @param v the weight decay, a finite number &gt;= 0
     * @return the copy
     * @throws IllegalArgumentException if {@code v} is negative or not finite
     */
    public OptimizerSpec weightDecay(double v) {
        return new OptimizerSpec(type, lr, nonNegative("weight decay", v), momentum, dampening, nesterov, beta1,
                beta2, eps, amsgrad, rmsAlpha, centered, lrDecay, initialAccumulatorValue, fused);
    }

    /**
     * A copy with momentum {@code v}. SGD and RMSprop only.
     *
     * @param v the momentum, a finite number &gt;= 0
     * @return the copy
     * @throws IllegalArgumentException if this is not SGD or RMSprop, or {@code v} is negative or not finite
     */
    public OptimizerSpec momentum(double v) {
        only("momentum", Type.SGD, Type.RMSPROP);
        return new OptimizerSpec(type, lr, weightDecay, nonNegative("momentum", v), dampening, nesterov, beta1,
                beta2, eps, amsgrad, rmsAlpha, centered, lrDecay, initialAccumulatorValue, fused);
    }

    /**
     * A copy with momentum dampening {@code v}. SGD only.
     *
     * @param v the dampening, a finite number
     * @return the copy
     * @throws IllegalArgumentException if this is not SGD, or {@code v} is not finite
     */
    public OptimizerSpec dampening(double v) {
        only("dampening", Type.SGD);
        return new OptimizerSpec(type, lr, weightDecay, momentum, finite("dampening", v), nesterov, beta1,
                beta2, eps, amsgrad, rmsAlpha, centered, lrDecay, initialAccumulatorValue, fused);
    }

    /**
     * A copy with Nesterov momentum on or off. SGD only; needs a positive momentum and zero dampening, as in
     * PyTorch, which is checked when the optimizer is built.
     *
     * @param v whether to use Nesterov momentum
     * @return the copy
     * @throws IllegalArgumentException if this is not SGD
     */
    public OptimizerSpec nesterov(boolean v) {
        only("nesterov", Type.SGD);
        return new OptimizerSpec(type, lr, weightDecay, momentum, dampening, v, beta1, beta2, eps, amsgrad,
                rmsAlpha, centered, lrDecay, initialAccumulatorValue, fused);
    }

    /**
     * A copy with the coefficients of the running averages of the gradient and its square. Adam and AdamW only.
     *
     * @param b1 the first moment's coefficient, in [0, 1)
     * @param b2 the second moment's coefficient, in [0, 1)
     * @return the copy
     * @throws IllegalArgumentException if this is not Adam or AdamW, or a beta lies outside [0, 1)
     */
    public OptimizerSpec betas(double b1, double b2) {
        only("betas", Type.ADAM, Type.ADAMW);
        if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1)) {
            throw new IllegalArgumentException("betas must lie in [0, 1), got (" + b1 + ", " + b2 + ")");
        }
        return new OptimizerSpec(type, lr, weightDecay, momentum, dampening, nesterov, b1, b2, eps, amsgrad,
                rmsAlpha, centered, lrDecay, initialAccumulatorValue, fused);
    }

    /**
     * A copy with {@code eps}, the term added to the denominator for numerical stability.
     * Adam, AdamW, RMSprop and Adagrad only.
     *
     * @param v the epsilon, a finite number &gt;= 0
     * @return the copy
     * @throws IllegalArgumentException if this is SGD, or {@code v} is negative or not finite
     */
    public OptimizerSpec eps(double v) {
        only("eps", Type.ADAM, Type.ADAMW, Type.RMSPROP, Type.ADAGRAD);
        return new OptimizerSpec(type, lr, weightDecay, momentum, dampening, nesterov, beta1, beta2,
                nonNegative("eps", v), amsgrad, rmsAlpha, centered, lrDecay, initialAccumulatorValue, fused);
    }

    /**
     * A copy with the AMSGrad variant on or off. Adam and AdamW only.
     *
     * @param v whether to use AMSGrad
     * @return the copy
     * @throws IllegalArgumentException if this is not Adam or AdamW
     */
    public OptimizerSpec amsgrad(boolean v) {
        only("amsgrad", Type.ADAM, Type.ADAMW);
        return new OptimizerSpec(type, lr, weightDecay, momentum, dampening, nesterov, beta1, beta2, eps, v,
                rmsAlpha, centered, lrDecay, initialAccumulatorValue, fused);
    }

    /**
     * A copy with RMSprop's smoothing constant ({@code alpha} in PyTorch; renamed here to keep it apart from the
     * constraint's). RMSprop only.
     *
     * @param v the smoothing constant, a finite number &gt;= 0
     * @return the copy
     * @throws IllegalArgumentException if this is not RMSprop, or {@code v} is negative or not finite
     */
    public OptimizerSpec smoothing(double v) {
        only("smoothing (RMSprop alpha)", Type.RMSPROP);
        return new OptimizerSpec(type, lr, weightDecay, momentum, dampening, nesterov, beta1, beta2, eps, amsgrad,
                nonNegative("RMSprop alpha", v), centered, lrDecay, initialAccumulatorValue, fused);
    }

    /**
     * A copy with centered RMSprop (normalizing by the estimated variance of the gradient) on or
     * off. RMSprop only.
     *
     * @param v whether to center
     * @return the copy
     * @throws IllegalArgumentException if this is not RMSprop
     */
    public OptimizerSpec centered(boolean v) {
        only("centered", Type.RMSPROP);
        return new OptimizerSpec(type, lr, weightDecay, momentum, dampening, nesterov, beta1, beta2, eps, amsgrad,
                rmsAlpha, v, lrDecay, initialAccumulatorValue, fused);
    }

    /**
     * A copy with learning rate decay {@code v}. Adagrad only.
     *
     * @param v the learning rate decay, a finite number &gt;= 0
     * @return the copy
     * @throws IllegalArgumentException if this is not Adagrad, or {@code v} is negative or not finite
     */
    public OptimizerSpec lrDecay(double v) {
        only("lr decay", Type.ADAGRAD);
        return new OptimizerSpec(type, lr, weightDecay, momentum, dampening, nesterov, beta1, beta2, eps, amsgrad,
                rmsAlpha, centered, nonNegative("lr decay", v), initialAccumulatorValue, fused);
    }

    /**
     * A copy with the initial value of Adagrad's sum of squared gradients. Adagrad only.
     *
     * @param v the initial accumulator value, a finite number &gt;= 0
     * @return the copy
     * @throws IllegalArgumentException if this is not Adagrad, or {@code v} is negative or not finite
     */
    public OptimizerSpec initialAccumulatorValue(double v) {
        only("initial accumulator value", Type.ADAGRAD);
        return new OptimizerSpec(type, lr, weightDecay, momentum, dampening, nesterov, beta1, beta2, eps, amsgrad,
                rmsAlpha, centered, lrDecay, nonNegative("initial accumulator value", v), fused);
    }

    /**
     * A copy with PyTorch's {@code fused} option: whether the constraint steps with the fused constrained
     * optimizer of libtext2data (the projection and the optimizer update in one pass over each tensor's memory)
     * or with libtorch's optimizer. {@code null} (the default): fused where it is available (SGD, Adam and AdamW,
     * with {@link Engine#FUSED} or {@link Engine#AUTO} when the native library loads, contiguous parameters);
     * {@code true}: fused, and building the constraint fails with a message saying why where it cannot be;
     * {@code false}: libtorch's optimizer. The two compute the same steps (libtorch's operation order).
     *
     * @param v null, true or false
     * @return the copy
     * @throws IllegalArgumentException if {@code v} is true and this is RMSprop or Adagrad (no fused variant)
     */
    public OptimizerSpec fused(Boolean v) {
        if (Boolean.TRUE.equals(v) && !hasFusedVariant()) {
            throw new IllegalArgumentException("fused is not available for " + type + " (SGD, Adam and AdamW only)");
        }
        return new OptimizerSpec(type, lr, weightDecay, momentum, dampening, nesterov, beta1, beta2, eps, amsgrad,
                rmsAlpha, centered, lrDecay, initialAccumulatorValue, v);
    }

    /**
     * PyTorch's {@code fused} option (see {@link #fused(Boolean)}).
     *
     * @return null (fused where available), true (required) or false (libtorch's optimizer)
     */
    public Boolean fused() {
        return fused;
    }

    /** Whether libtext2data has a fused variant of this optimizer. */
    boolean hasFusedVariant() {
        return type == Type.SGD || type == Type.ADAM || type == Type.ADAMW;
    }

    /** The options of the fused variant, with learning rate {@code lr} (see {@link #hasFusedVariant()}). */
    org.text2data.engine.FusedOptimizer.Options fusedOptions(double lr) {
        if (nesterov && (momentum <= 0 || dampening != 0)) {
            throw new IllegalArgumentException("nesterov needs a positive momentum and zero dampening");
        }
        return new org.text2data.engine.FusedOptimizer.Options(switch (type) {
            case SGD -> org.text2data.engine.FusedOptimizer.Kind.SGD;
            case ADAM -> org.text2data.engine.FusedOptimizer.Kind.ADAM;
            case ADAMW -> org.text2data.engine.FusedOptimizer.Kind.ADAMW;
            default -> throw new IllegalStateException("no fused variant of " + type);
        }, lr, beta1, beta2, eps, weightDecay, amsgrad, momentum, dampening, nesterov);
    }

    /**
     * The base optimizer.
     *
     * @return the optimizer type
     */
    public Type type() {
        return type;
    }

    /**
     * The learning rate.
     *
     * @return the learning rate
     */
    public double lr() {
        return lr;
    }

    /**
     * The weight decay.
     *
     * @return the weight decay (0 for none)
     */
    public double weightDecay() {
        return weightDecay;
    }

    /** Builds the libtorch optimizer over {@code params}. */
    Optimizer create(TensorVector params) {
        if (nesterov && (momentum <= 0 || dampening != 0)) {
            throw new IllegalArgumentException("nesterov needs a positive momentum and zero dampening");
        }
        return switch (type) {
            case SGD -> {
                SGDOptions o = new SGDOptions(lr);
                o.momentum().put(momentum);
                o.dampening().put(dampening);
                o.weight_decay().put(weightDecay);
                o.nesterov().put(nesterov);
                yield new SGD(params, o);
            }
            case ADAM -> {
                AdamOptions o = new AdamOptions(lr);
                putBetas(o.betas());
                o.eps().put(eps);
                o.weight_decay().put(weightDecay);
                o.amsgrad().put(amsgrad);
                yield new Adam(params, o);
            }
            case ADAMW -> {
                AdamWOptions o = new AdamWOptions(lr);
                putBetas(o.betas());
                o.eps().put(eps);
                o.weight_decay().put(weightDecay);
                o.amsgrad().put(amsgrad);
                yield new AdamW(params, o);
            }
            case RMSPROP -> {
                RMSpropOptions o = new RMSpropOptions(lr);
                o.alpha().put(rmsAlpha);
                o.eps().put(eps);
                o.weight_decay().put(weightDecay);
                o.momentum().put(momentum);
                o.centered().put(centered);
                yield new RMSprop(params, o);
            }
            case ADAGRAD -> {
                AdagradOptions o = new AdagradOptions(lr);
                o.lr_decay().put(lrDecay);
                o.weight_decay().put(weightDecay);
                o.initial_accumulator_value().put(initialAccumulatorValue);
                o.eps().put(eps);
                yield new Adagrad(params, o);
            }
        };
    }

    /**
     * The options expose betas as a pointer to a {@code std::tuple<double, double>}, which libstdc++
     * lays out last element first; {@code OptimizerSpecTest} holds a step with custom betas to
     * PyTorch's formula, so a change of layout fails a test rather than silently swapping them.
     */
    private void putBetas(org.bytedeco.javacpp.DoublePointer betas) {
        betas.put(0, beta2).put(1, beta1);
    }

    @Override
    public String toString() {
        StringBuilder s = new StringBuilder(type.toString()).append("(lr=").append(lr);
        if (weightDecay != 0) {
            s.append(", weight_decay=").append(weightDecay);
        }
        switch (type) { // every option of the kind, as PyTorch's repr of an optimizer shows them
            case SGD -> s.append(", momentum=").append(momentum).append(", dampening=").append(dampening)
                    .append(", nesterov=").append(nesterov);
            case ADAM, ADAMW -> s.append(", betas=(").append(beta1).append(", ").append(beta2).append("), eps=")
                    .append(eps).append(", amsgrad=").append(amsgrad);
            case RMSPROP -> s.append(", alpha=").append(rmsAlpha).append(", eps=").append(eps).append(", momentum=")
                    .append(momentum).append(", centered=").append(centered);
            case ADAGRAD -> s.append(", lr_decay=").append(lrDecay).append(", initial_accumulator_value=")
                    .append(initialAccumulatorValue).append(", eps=").append(eps);
        }
        if (fused != null) {
            s.append(", fused=").append(fused);
        }
        return s.append(')').toString();
    }

    private void only(String option, Type... types) {
        for (Type t : types) {
            if (t == type) {
                return;
            }
        }
        throw new IllegalArgumentException(option + " is not an option of " + type);
    }

    static double nonNegative(String what, double v) {
        if (!Double.isFinite(v) || v < 0) {
            throw new IllegalArgumentException(what + " must be a finite number >= 0, got " + v);
        }
        return v;
    }

    private static double finite(String what, double v) {
        if (!Double.isFinite(v)) {
            throw new IllegalArgumentException(what + " must be finite, got " + v);
        }
        return v;
    }
}

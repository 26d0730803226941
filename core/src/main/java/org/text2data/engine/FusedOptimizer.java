package org.text2data.engine;

import java.lang.foreign.MemorySegment;

import org.text2data.ffi.t2d_optimizer;
import org.text2data.ffi.text2data_h;

/**
 * The fused constrained optimizers of libtext2data (SGD, Adam, AdamW): their options and the per-parameter state
 * they update. The step itself is {@link FusedEngine#optimizerStep}: one native call over every parameter that
 * projects its gradient and updates the parameter and this state in the same pass over memory, with libtorch's
 * operation order. The state is PyTorch's: a step count and {@code exp_avg}, {@code exp_avg_sq},
 * {@code max_exp_avg_sq} (Adam, AdamW) or {@code momentum_buffer} (SGD), each like the parameter, kept in each
 * parameter's {@link ParamState}.
 */
public final class FusedOptimizer {

    private FusedOptimizer() {
    }

    /** The optimizers with a fused variant. */
    public enum Kind {
        /** {@code torch.optim.SGD}. */
        SGD,
        /** {@code torch.optim.Adam}. */
        ADAM,
        /** {@code torch.optim.AdamW}. */
        ADAMW
    }

    /**
     * An optimizer and its options, with PyTorch's names and meaning; options a kind lacks are ignored.
     *
     * @param kind the optimizer
     * @param lr the learning rate
     * @param beta1 Adam's first-moment coefficient
     * @param beta2 Adam's second-moment coefficient
     * @param eps Adam's denominator term
     * @param weightDecay the weight decay (L2 for SGD and Adam, decoupled for AdamW)
     * @param amsgrad Adam's AMSGrad variant
     * @param momentum SGD's momentum
     * @param dampening SGD's dampening
     * @param nesterov SGD's Nesterov momentum
     */
    public record Options(Kind kind, double lr, double beta1, double beta2, double eps, double weightDecay,
                          boolean amsgrad, double momentum, double dampening, boolean nesterov) {

        /**
         * The same options with learning rate {@code v}.
         *
         * @param v the learning rate
         * @return the copy
         */
        public Options withLr(double v) {
            return new Options(kind, v, beta1, beta2, eps, weightDecay, amsgrad, momentum, dampening, nesterov);
        }

        /**
         * The state buffers this optimizer keeps per parameter, in the kernel's order, with PyTorch's names.
         *
         * @return the names ({@code momentum_buffer}; {@code exp_avg}, {@code exp_avg_sq}, {@code max_exp_avg_sq})
         */
        public String[] stateNames() {
            if (kind == Kind.SGD) {
                return momentum != 0 ? new String[] {"momentum_buffer"} : new String[0];
            }
            return amsgrad ? new String[] {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
                    : new String[] {"exp_avg", "exp_avg_sq"};
        }

        /** How many state buffers this optimizer keeps per parameter: {@code stateNames().length}, without allocating. */
        int stateCount() {
            return kind == Kind.SGD ? (momentum != 0 ? 1 : 0) : amsgrad ? 3 : 2;
        }

        /** Whether PyTorch keeps a {@code step} count in this optimizer's state (Adam and AdamW do, SGD does not). */
        boolean savesStep() {
            return kind != Kind.SGD;
        }

        /** Writes these options into a {@code t2d_optimizer}. */
        void write(MemorySegment o) {
            t2d_optimizer.kind(o, switch (kind) {
                case SGD -> text2data_h.T2D_SGD();
                case ADAM -> text2data_h.T2D_ADAM();
                case ADAMW -> text2data_h.T2D_ADAMW();
            });
            t2d_optimizer.flags(o, (amsgrad && kind != Kind.SGD ? text2data_h.T2D_AMSGRAD() : 0)
                    | (nesterov && kind == Kind.SGD ? text2data_h.T2D_NESTEROV() : 0));
            t2d_optimizer.lr(o, lr);
            t2d_optimizer.beta1(o, beta1);
            t2d_optimizer.beta2(o, beta2);
            t2d_optimizer.eps(o, eps);
            t2d_optimizer.weight_decay(o, weightDecay);
            t2d_optimizer.momentum(o, momentum);
            t2d_optimizer.dampening(o, dampening);
        }
    }
}

package org.text2data.engine;

import java.lang.foreign.MemorySegment;
import java.util.LinkedHashMap;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.text2data.ffi.t2d_optimizer;
import org.text2data.ffi.text2data_h;

/**
 * The fused constrained optimizers of libtext2data (SGD, Adam, AdamW): their options and the per-parameter state
 * they update. The step itself is {@link FusedEngine#optimizerStep}: one native call over every parameter that
 * projects its gradient and updates the parameter and this state in the same pass over memory, with libtorch's
 * operation order. The state is PyTorch's: a step count and {@code exp_avg}, {@code exp_avg_sq},
 * {@code max_exp_avg_sq} (Adam, AdamW) or {@code momentum_buffer} (SGD), each like the parameter.
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

    /**
     * One parameter's optimizer state: its step count (a one-element int64 tensor on the parameter's device, which
     * the kernel increments) and its state buffers, created at the parameter's first step as libtorch creates them.
     * Owned by the constraint; {@link #close()} releases the tensors.
     */
    public static final class ParamState implements AutoCloseable {
        /** The state buffers in the kernel's order (null until created). */
        final Tensor[] buffers = new Tensor[3];
        Tensor step;
        /** Whether the buffers were created by the call in progress (dropped again if it is refused). */
        boolean fresh;

        /** Creates an empty state: no step taken. */
        public ParamState() {
        }

        /** Creates the step count and the buffers {@code o} needs, zero, like {@code param}, where missing. */
        void ensure(Options o, Tensor param) {
            int n = o.stateNames().length;
            if (step == null) {
                try (PointerScope scope = new PointerScope()) {
                    Tensor s = param.detach().new_zeros(new long[0], new TensorOptions(torch.ScalarType.Long));
                    s.retainReference();
                    step = s;
                }
                fresh = true;
            }
            for (int k = 0; k < n; k++) {
                if (buffers[k] == null) {
                    Tensor b = torch.zeros_like(param.detach());
                    b.retainReference();
                    buffers[k] = b;
                    fresh = true;
                }
            }
        }

        /** Drops what {@link #ensure} created for a call that was refused: the state is as before the call. */
        void discardFresh() {
            if (fresh) {
                close();
                fresh = false;
            }
        }

        /**
         * The step count (reads the device when the state lives on a GPU).
         *
         * @return the steps this parameter has taken
         */
        public long steps() {
            if (step == null) {
                return 0;
            }
            try (PointerScope scope = new PointerScope()) {
                return step.item_long();
            }
        }

        /**
         * The state as PyTorch names it, or null where PyTorch has none (before the first step; SGD without
         * momentum): integer fields ({@code step} for Adam and AdamW) and tensors (the live buffers, not copies).
         *
         * @param o the optimizer's options
         * @param ints receives the integer fields
         * @return the tensors by name, or null for no state
         */
        public Map<String, Tensor> view(Options o, Map<String, Long> ints) {
            long s = steps();
            String[] names = o.stateNames();
            if (s == 0 || (names.length == 0 && !o.savesStep())) {
                return null;
            }
            if (o.savesStep()) {
                ints.put("step", s);
            }
            Map<String, Tensor> out = new LinkedHashMap<>();
            for (int k = 0; k < names.length; k++) {
                out.put(names[k], buffers[k]);
            }
            return out;
        }

        /**
         * Replaces this state by a saved one (see {@link #view}): the buffers are copied into new tensors like
         * {@code param}; a null {@code tensors} means no state.
         *
         * @param o the optimizer's options
         * @param steps the saved step count (for SGD, which saves none: 1 when a momentum buffer is given)
         * @param tensors the saved buffers by name, or null for none
         * @param param the parameter
         */
        public void load(Options o, long steps, Map<String, Tensor> tensors, Tensor param) {
            close();
            if (tensors == null) {
                return;
            }
            ensure(o, param);
            fresh = false;
            String[] names = o.stateNames();
            try (PointerScope scope = new PointerScope()) {
                for (int k = 0; k < names.length; k++) {
                    buffers[k].copy_(tensors.get(names[k]));
                }
                step.fill_(new Scalar(steps));
            }
        }

        /** The data address of buffer k (0 if there is none). */
        long address(int k) {
            return buffers[k] == null ? 0 : FusedEngine.dataAddress(buffers[k]);
        }

        /** Writes the step count's address into a row's {@code step} field. */
        long stepAddress() {
            return FusedEngine.dataAddress(step);
        }

        /** Releases the tensors; the state is empty afterwards. */
        @Override
        public void close() {
            for (int k = 0; k < buffers.length; k++) {
                if (buffers[k] != null) {
                    buffers[k].releaseReference();
                    buffers[k] = null;
                }
            }
            if (step != null) {
                step.releaseReference();
                step = null;
            }
        }
    }

}

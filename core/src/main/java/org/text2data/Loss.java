package org.text2data;

import java.util.Arrays;
import java.util.Locale;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * A loss of (prediction, label) returning a 0-dim tensor. The built-in ones check shapes first and
 * say what did not match; any function of (prediction, label) is accepted.
 */
@FunctionalInterface
public interface Loss {

    /**
     * Computes the loss.
     *
     * @param prediction the model's output
     * @param label      the targets
     * @return the loss, a 0-dim tensor
     */
    Tensor apply(Tensor prediction, Tensor label);

    /** Mean squared error ({@code F.mse_loss}, mean reduction). */
    Loss MSE = (p, y) -> torch.mse_loss(sameShape("mse", p, y), y);

    /** Mean absolute error ({@code F.l1_loss}, mean reduction). */
    Loss L1 = (p, y) -> torch.l1_loss(sameShape("l1", p, y), y);

    /** Huber-like smooth L1 with beta 1 ({@code F.smooth_l1_loss}, mean reduction). */
    Loss SMOOTH_L1 = (p, y) -> torch.smooth_l1_loss(sameShape("smooth-l1", p, y), y);

    /**
     * Cross-entropy over logits {@code [N, C]} (or {@code [N, C, ...]}) with class indices {@code [N]}
     * (integer) or class probabilities of the prediction's shape (floating point).
     */
    Loss CROSS_ENTROPY = (p, y) -> torch.cross_entropy(checkCrossEntropy(p, y), y);

    /**
     * A built-in loss by name, ignoring case and with {@code _} read as {@code -}.
     *
     * @param name {@code mse}, {@code l1}, {@code smooth-l1}, or {@code cross-entropy} (also {@code ce})
     * @return {@link #MSE}, {@link #L1}, {@link #SMOOTH_L1} or {@link #CROSS_ENTROPY}
     * @throws IllegalArgumentException if {@code name} names no built-in loss
     */
    static Loss named(String name) {
        return switch (name.toLowerCase(Locale.ROOT).replace('_', '-')) {
            case "mse" -> MSE;
            case "l1" -> L1;
            case "smooth-l1" -> SMOOTH_L1;
            case "cross-entropy", "ce" -> CROSS_ENTROPY;
            default -> throw new IllegalArgumentException("unknown loss '" + name
                    + "': expected one of mse, l1, smooth-l1, cross-entropy");
        };
    }

    private static Tensor sameShape(String loss, Tensor p, Tensor y) {
        long[] ps = p.shape();
        long[] ys = y.shape();
        if (!Arrays.equals(ps, ys)) {
            throw new IllegalArgumentException(loss + " loss: prediction shape " + Arrays.toString(ps)
                    + " does not match label shape " + Arrays.toString(ys));
        }
        return p;
    }

    private static Tensor checkCrossEntropy(Tensor p, Tensor y) {
        long[] ps = p.shape();
        long[] ys = y.shape();
        if (ps.length < 2) {
            throw new IllegalArgumentException("cross-entropy loss: prediction must be logits [N, C, ...], got shape "
                    + Arrays.toString(ps));
        }
        if (Tensors.isFloating(y)) {
            if (!Arrays.equals(ps, ys)) {
                throw new IllegalArgumentException("cross-entropy loss: probability labels of shape "
                        + Arrays.toString(ys) + " do not match prediction shape " + Arrays.toString(ps));
            }
        } else {
            long[] expected = new long[ps.length - 1];
            expected[0] = ps[0];
            System.arraycopy(ps, 2, expected, 1, ps.length - 2);
            if (!Arrays.equals(expected, ys)) {
                throw new IllegalArgumentException("cross-entropy loss: class-index labels must have shape "
                        + Arrays.toString(expected) + ", got " + Arrays.toString(ys));
            }
        }
        return p;
    }
}

package org.text2data;

import java.util.Arrays;

import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** Small helpers for messages and checks. */
final class Tensors {
    private Tensors() {
    }

    static boolean isFloating(Tensor t) {
        return t.is_floating_point();
    }

    static String dtype(Tensor t) {
        // bytedeco's ScalarType values from native calls are not the enum's constants: compare by text
        String s = String.valueOf(t.scalar_type());
        return switch (s) {
            case "Float" -> "float32";
            case "Double" -> "float64";
            case "Half" -> "float16";
            case "BFloat16" -> "bfloat16";
            case "Long" -> "int64";
            case "Int" -> "int32";
            case "Bool" -> "bool";
            default -> s.toLowerCase(java.util.Locale.ROOT);
        };
    }

    static String device(Tensor t) {
        try (Device d = t.device()) {
            return d.str().getString();
        }
    }

    /** A 0-dim tensor holding {@code v}, with {@code like}'s dtype and device. */
    static Tensor scalarLike(Tensor like, double v) {
        return torch.scalar_tensor(new org.bytedeco.pytorch.Scalar(v), new org.bytedeco.pytorch.TensorOptions(like.scalar_type()))
                .to(like);
    }

    static String describe(Tensor t) {
        return dtype(t) + Arrays.toString(t.shape()) + " on " + device(t);
    }

    /** The tensor's data address (0 for a tensor without storage). */
    static long address(Tensor t) {
        try (org.bytedeco.javacpp.Pointer p = t.data_ptr()) {
            return p == null ? 0L : p.address();
        }
    }

    static long[] strides(Tensor t) {
        long[] s = new long[(int) t.dim()];
        for (int d = 0; d < s.length; d++) {
            s[d] = t.stride(d);
        }
        return s;
    }
}

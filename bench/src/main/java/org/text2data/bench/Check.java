package org.text2data.bench;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.text2data.LibTorch;
import org.text2data.Loss;

/** Prints each workload's size and initial losses (unconditional, conditional), to compare with Python's. */
public final class Check {
    private Check() {
    }

    public static void main(String[] args) {
        LibTorch.ensureLoaded();
        String[] names = args.length > 0 ? args : Workloads.CONFIGS.keySet().toArray(new String[0]);
        for (String n : names) {
            Workloads.Workload w = Workloads.load(n);
            try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
                double u = Loss.MSE.apply(w.model().forward(w.data(), null), w.label()).item_double();
                double c = Loss.MSE.apply(w.model().forward(w.data(), w.cond()), w.label()).item_double();
                System.out.printf("%s %s %d tensors %d params  uncond %.9f  cond %.9f%n", n,
                        w.fromFiles() ? "(weights from files)" : "(seeded libtorch init)",
                        w.params().size(), w.parameterCount(), u, c);
            }
        }
    }
}

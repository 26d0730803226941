package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;

import org.bytedeco.pytorch.*;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/**
 * The README's "Use it from your project" example, compiled and run: {@link Finetune} is the README's
 * code, and the test checks that every line of the README's block is here, so neither can drift.
 */
class UseFromYourProjectTest {

    public static class Finetune {
        static { LibTorch.ensureLoaded(); }        // first, before any bytedeco class

        public static void main(String[] args) {
            torch.manual_seed(0);
            Module net = new Module();
            LinearImpl fc1 = net.register_module("fc1", new LinearImpl(8, 32));
            LinearImpl fc2 = net.register_module("fc2", new LinearImpl(32, 4));
            ConditionalModel model = (x, cond) ->      // cond == null: the unconditional pass
                    fc2.forward(torch.relu(fc1.forward(cond == null ? x : x.add(cond))));
            Tensor data = torch.randn(64, 8), cond = torch.randn(64, 8), label = torch.randn(64, 4);
            double gConstraint = 1.2;                  // your pretrained model's unconditional loss, relaxed
            try (Constraint opt = new Constraint(net, OptimizerSpec.adam(1e-3))) {
                for (int step = 0; step <= 200; step++) {
                    try (StepResult r = Text2Data.runStep(opt, gConstraint, model, cond, data, label, Loss.MSE)) {
                        if (step % 50 == 0) System.out.printf("step %d  g %.4f  f %.4f%n", step, r.uncondLoss(), r.condLoss());
                    }
                }
            }
        }
    }

    static List<String> readmeExample() throws Exception {
        String readme = Files.readString(Path.of("..", "README.md"));
        int section = readme.indexOf("## Use it from your project");
        assertThat(section).as("README section").isNotNegative();
        int start = readme.indexOf("```java\n", section) + "```java\n".length();
        int end = readme.indexOf("```", start);
        return readme.substring(start, end).lines().map(String::strip).filter(l -> !l.isEmpty()).toList();
    }

    @Test
    void theReadmesExampleIsThisCode() throws Exception {
        Set<String> here = Files.readAllLines(Path.of("src/test/java/org/text2data/UseFromYourProjectTest.java"))
                .stream().map(String::strip).collect(Collectors.toSet());
        List<String> missing = readmeExample().stream()
                .filter(l -> !here.contains(l) && !l.equals("public class Finetune {") // nested here
                        && !l.equals("import org.text2data.*;")).toList();                  // this package
        assertThat(missing).as("README lines not in the compiled example").isEmpty();
    }

    @Test
    void theExampleRunsAndTheConditionalLossFalls() throws Exception {
        PrintStream old = System.out;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
        try {
            Finetune.main(new String[0]);
        } finally {
            System.setOut(old);
        }
        List<String> lines = buf.toString(StandardCharsets.UTF_8).lines().toList();
        System.out.println(String.join("\n", lines));
        assertThat(lines).hasSize(5);
        double f0 = Double.parseDouble(lines.get(0).replaceAll(".* f ", ""));
        double f4 = Double.parseDouble(lines.get(4).replaceAll(".* f ", ""));
        assertThat(f4).isLessThan(f0);
    }
}

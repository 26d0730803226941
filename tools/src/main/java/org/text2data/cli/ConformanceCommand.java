package org.text2data.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

import org.text2data.Engine;
import org.text2data.LibTorch;
import org.text2data.conformance.Conformance;
import org.text2data.engine.Engines;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

@Command(name = "conformance", mixinStandardHelpOptions = true,
        description = {"Runs every case of a conformance fixture folder (projection.json, run_step.json and the "
                + "TorchScript / torch.save files beside them) on every engine available here, and compares with "
                + "the Python reference's numbers.",
                "Each trajectory runs end to end ('g computed') and with the fixture's recorded unconditional "
                + "losses handed to the projection ('g recorded'), which isolates the projection and optimizer "
                + "arithmetic from the loss's last bits. An end-to-end run that differs only because it sits on "
                + "the barrier (g - g_constraint within rounding of zero) says BARRIER, with the step and the value.",
                "Prints one line per case and engine, then 'N passed, M failed'; exits 0 only when none failed."})
final class ConformanceCommand implements Callable<Integer> {

    @Parameters(arity = "0..1", paramLabel = "DIR",
            description = "fixture folder (default: the copy in the project's test resources)")
    Path dir;

    @Override
    public Integer call() throws Exception {
        Path d = dir != null ? dir : defaultDir();
        if (!Files.isDirectory(d)) {
            throw new IllegalArgumentException("fixture folder not found: " + d);
        }
        List<Engine> engines = new ArrayList<>(List.of(Engine.PLAIN));
        if (Engines.fusedAvailable()) {
            engines.add(Engine.FUSED);
        } else {
            System.out.println("note: fused engine not available here (" + Engines.fusedUnavailableReason() + ")");
        }
        System.out.println("fixtures: " + d.toAbsolutePath().normalize());
        List<Conformance.Result> results = new ArrayList<>(new Conformance(d).runAll(engines, r -> System.out.println(r.line())));
        if (LibTorch.cudaAvailable()) {
            results.addAll(new Conformance(d, "cuda").runAll(engines, r -> System.out.println(r.line())));
        } else {
            System.out.println("note: no CUDA device here (" + LibTorch.cudaUnavailableReason()
                    + "); the cases ran on the CPU only");
        }
        long failed = results.stream().filter(r -> !r.passed()).count();
        long barrier = results.stream().filter(r -> r.verdict() == Conformance.Verdict.BARRIER).count();
        if (barrier > 0) {
            System.out.println("note: " + barrier + " end-to-end trajectory run(s) sit on the barrier (BARRIER above): "
                    + "g - g_constraint is zero in the fixture to within rounding, and this device's g lands on the "
                    + "other side of it; counted as passed because the same runs with the fixture's g at those "
                    + "steps agree (see the README, \"Comparing runs across machines\")");
        }
        System.out.println((results.size() - failed) + " passed, " + failed + " failed");
        return failed == 0 ? 0 : 1;
    }

    static Path defaultDir() {
        String home = System.getProperty("text2data.home", ".");
        return Path.of(home, "core", "src", "test", "resources", "conformance");
    }
}

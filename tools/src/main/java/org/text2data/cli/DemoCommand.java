package org.text2data.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

import org.text2data.AtomicFile;
import org.text2data.demo.Demo;
import org.text2data.demo.DemoConfig;
import org.text2data.train.TrainingListener;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "demo", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Text2Data end to end on a generated set of waveforms (seeded, nothing downloaded): a shape "
                + "(sine, square, sawtooth, spike), cycles, amplitude and trend (3 levels each) described in words, phase, level, noise and "
                + "time warp not; only the series of a few combinations of levels keep their description.",
                "Trains a small conditional diffusion model three ways (conditional-only on the labelled series; "
                        + "pretrain on all + plain finetune; pretrain on all + Text2Data finetune) with the same "
                        + "optimizer, schedule and budget, plus a ceiling (all labelled) and a floor (unconditional), "
                        + "over several seeds; scores the accuracy of each requested level on seen and unseen "
                        + "combinations, MMD and diversity; prints a table and writes a JSON report and PNG plots."})
final class DemoCommand implements Callable<Integer> {

    @Option(names = "--quick", description = "a small, short run (for tests)")
    boolean quick;

    @Option(names = "--seed", paramLabel = "S", description = "first seed; seeds S, S+1, ... (default: 7)")
    Long seed;

    @Option(names = "--seeds", paramLabel = "N", description = "how many seeds (default: 3; --quick: 2)")
    Integer seeds;

    @Option(names = "--seen", paramLabel = "K",
            description = "how many of the 108 combinations the labelled series come from (default: 12; --quick: 8)")
    Integer seen;

    @Option(names = "--relax", paramLabel = "F",
            description = "g_constraint = F x the pretrained model's unconditional loss (default: 1)")
    Double relax;

    @Option(names = "--guidance", paramLabel = "W",
            description = "classifier-free guidance scale when sampling; 1 = plain conditional (default: 1)")
    Double guidance;

    @Option(names = "--out", paramLabel = "DIR", defaultValue = "demo-output",
            description = "folder for the plots and, unless --report says otherwise, report.json (default: ${DEFAULT-VALUE})")
    Path out;

    @Option(names = "--report", paramLabel = "FILE", description = "where to write the JSON report (default: DIR/report.json)")
    Path report;

    /** Everything the demo will write must be writable, and distinct, before the minutes of training start. */
    private void checkOutputs(Path reportFile) throws IOException {
        Outputs.checkFolder("--out", out);
        Path reportDir = reportFile.toAbsolutePath().getParent();
        if (reportDir == null) {
            throw new IOException("--report " + reportFile + " has no parent folder");
        }
        if (Files.isDirectory(reportDir)) {
            AtomicFile.checkWritable(reportFile);
        } else {
            Outputs.checkFolder("--report's folder", reportDir);
        }
        for (String plot : Demo.PLOTS) {
            Path p = out.resolve(plot);
            if (p.toAbsolutePath().normalize().equals(reportFile.toAbsolutePath().normalize()) || Outputs.sameFile(p, reportFile)) {
                throw new IllegalArgumentException("--report " + reportFile + " is the file the demo writes its plot "
                        + plot + " to; choose another report file");
            }
            if (Files.isDirectory(out)) {
                AtomicFile.checkWritable(p);
            }
        }
    }

    @Override
    public Integer call() throws Exception {
        DemoConfig cfg = quick ? DemoConfig.quick() : DemoConfig.standard();
        cfg = cfg.with(seed, seeds, seen, relax, guidance); // all checked there
        Path reportFile = report != null ? report : out.resolve("report.json");
        checkOutputs(reportFile);
        Map<String, ProgressBar> bars = new HashMap<>();
        TrainingListener progress = new TrainingListener() {
            @Override
            public void onStep(String stage, long step, long total, double g, double f) {
                if (step == 1) { // a stage starts again with each seed
                    bars.remove(stage);
                }
                ProgressBar bar = bars.computeIfAbsent(stage, s -> new ProgressBar(String.format("%-20s", s), total));
                String info = Double.isNaN(g) ? "" : Double.isNaN(f) ? String.format(Locale.ROOT, "loss %.4f", g)
                        : String.format(Locale.ROOT, "g %.4f  f %.4f", g, f);
                bar.update(step, info);
            }

            @Override
            public void onWarning(String stage, long step, String message) {
                System.err.println((System.console() != null ? "\n" : "") + "warning: " + stage + ": " + message);
            }
        };
        long t0 = System.nanoTime();
        System.err.println("demo (" + cfg.name() + ", seeds " + cfg.seed() + ".." + (cfg.seed() + cfg.seeds() - 1) + ")");
        Demo.Report r = new Demo(cfg, progress, System.err::println).run(reportFile, out);
        System.out.println();
        System.out.printf(Locale.ROOT, "accuracy of the requested level (mean over shape, cycles, amplitude, trend; "
                + "chance %.3f), mean [min, max] over %d seeds%n", java.util.Arrays.stream(r.chance()).average()
                .orElseThrow(), cfg.seeds());
        System.out.printf(Locale.ROOT, "%-18s %-24s %-24s %-26s %s%n", "method", "unseen combinations",
                "seen combinations", "quality (MMD)", "max g/g_constraint");
        for (String m : Demo.METHODS) {
            boolean g = Demo.G_METHODS.contains(m);
            System.out.printf(Locale.ROOT, "%-18s %-24s %-24s %-26s %s%n", m, cell(r, m, "unseen", 3),
                    cell(r, m, "seen", 3), cell(r, m, "mmd", 4), g ? cell(r, m, "g", 2) : "-");
        }
        System.out.printf(Locale.ROOT, "report: %s   plots: %s   (%.0f s)%n", reportFile, out, (System.nanoTime() - t0) / 1e9);
        return 0;
    }

    private static String cell(Demo.Report r, String method, String what, int digits) {
        double[] mm = r.range(method, what);
        String f = "%." + digits + "f";
        return String.format(Locale.ROOT, f + " [" + f + ", " + f + "]", r.mean(method, what), mm[0], mm[1]);
    }
}

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
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "demo", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Text2Data end to end on a generated low-resource time-series set (seeded, nothing downloaded): "
                + "series with a trend, frequency, amplitude and noise level, described in words; only 10%% keep "
                + "their description.",
                "Trains a small conditional diffusion model three ways (conditional-only on the labelled 10%%; "
                        + "pretrain on all + plain finetune; pretrain on all + Text2Data finetune), scores "
                        + "controllability and quality, prints a table, and writes a JSON report and PNG plots."})
final class DemoCommand implements Callable<Integer> {

    static final class Size {
        @Option(names = "--quick", description = "a few seconds, small (for tests)")
        boolean quick;

        @Option(names = "--full", description = "longer and larger, for better numbers")
        boolean full;
    }

    @ArgGroup(exclusive = true)
    Size size;

    @Option(names = "--seed", description = "seed for data, initialisation and sampling (default: the preset's, 7)")
    Long seed;

    @Option(names = "--relax", paramLabel = "F",
            description = "g_constraint = F x the lowest pretraining loss (default: ${DEFAULT-VALUE})", defaultValue = "1.0")
    double relax;

    @Option(names = "--labelled", paramLabel = "FRACTION", defaultValue = "0.1",
            description = "fraction of series that keep their description (default: ${DEFAULT-VALUE})")
    double labelled;

    @Option(names = "--guidance", paramLabel = "W", defaultValue = "1.0",
            description = "classifier-free guidance scale when sampling; 1 = plain conditional (default: ${DEFAULT-VALUE})")
    double guidance;

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
        for (String plot : new String[] {"training.png", "samples.png"}) {
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
        DemoConfig cfg = size != null && size.quick ? DemoConfig.quick()
                : size != null && size.full ? DemoConfig.full() : DemoConfig.standard();
        if (seed != null) {
            cfg = cfg.withSeed(seed);
        }
        cfg = cfg.withRelax(relax).withLabelledFraction(labelled).withGuidance(guidance); // all checked there
        Path reportFile = report != null ? report : out.resolve("report.json");
        checkOutputs(reportFile);
        Map<String, ProgressBar> bars = new HashMap<>();
        TrainingListener progress = (stage, step, total, g, f) -> {
            ProgressBar bar = bars.computeIfAbsent(stage, s -> new ProgressBar(String.format("%-28s", s), total));
            String info = Double.isNaN(g) ? "" : Double.isNaN(f) ? String.format(Locale.ROOT, "loss %.4f", g)
                    : String.format(Locale.ROOT, "g %.4f  f %.4f", g, f);
            bar.update(step, info);
        };
        long t0 = System.nanoTime();
        System.err.println("demo (" + cfg.name() + ", seed " + cfg.seed() + ")");
        Demo.Report r = new Demo(cfg, progress, System.err::println).run(reportFile, out);
        System.out.println();
        System.out.printf(Locale.ROOT, "%-20s %24s %22s %22s%n", "method", "controllability error", "quality (MMD)",
                "max g/g_constraint");
        for (Demo.MethodResult m : r.methods()) {
            System.out.printf(Locale.ROOT, "%-20s %24.4f %22.4f %22s%n", m.method(), m.controllabilityError(),
                    m.qualityDistance(), m.maxGOverGConstraint() == null ? "-"
                            : String.format(Locale.ROOT, "%.3f", m.maxGOverGConstraint()));
        }
        System.out.printf(Locale.ROOT, "%-20s %24.4f %22.4f %22s%n", "(real data)", r.realControllabilityFloor(),
                r.realQualityFloor(), "-");
        System.out.println("lower is better in both columns; g_constraint " + String.format(Locale.ROOT, "%.5f", r.gConstraint()));
        System.out.printf(Locale.ROOT, "report: %s   plots: %s, %s   (%.0f s)%n", reportFile, out.resolve("training.png"),
                out.resolve("samples.png"), (System.nanoTime() - t0) / 1e9);
        return 0;
    }
}

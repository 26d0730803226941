package org.text2data.demo;

import java.awt.Color;
import java.awt.Graphics2D;
import java.awt.Rectangle;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/** The demo's three plots: accuracy on unseen combinations over training, g against g_constraint, samples. */
final class DemoPlots {
    private static final Map<String, Color> COLORS = Map.of("conditional_only", Charts.GREEN,
            "pretrain_finetune", Charts.ORANGE, "text2data", Charts.BLUE, "ceiling", Charts.GRAY,
            "floor", Charts.BLACK);

    private DemoPlots() {
    }

    static void write(Demo.Report rep, Path dir) throws IOException {
        accuracy(rep, dir.resolve("accuracy.png"));
        g(rep, dir.resolve("g.png"));
        samples(rep, dir.resolve("samples.png"));
    }

    /** Mean over seeds of the unseen-combination accuracy at each evaluation, per method, against total steps. */
    private static void accuracy(Demo.Report rep, Path file) throws IOException {
        BufferedImage img = Charts.canvas(760, 440);
        Graphics2D g = Charts.graphics(img);
        List<Charts.Line> lines = new ArrayList<>();
        double end = Math.max(rep.config().pretrainSteps() + rep.config().ceilingSteps(), // the ceiling's last step
                rep.config().pretrainSteps() + rep.config().finetuneSteps()); // conditional-only's
        for (String m : List.of("conditional_only", "pretrain_finetune", "text2data", "ceiling")) {
            List<double[]> c0 = rep.runs().get(0).scores().get(m).curve();
            double[] x = new double[c0.size()];
            double[] y = new double[c0.size()];
            for (int i = 0; i < c0.size(); i++) {
                x[i] = c0.get(i)[0];
                int ii = i;
                y[i] = rep.runs().stream().mapToDouble(r -> r.scores().get(m).curve().get(ii)[1]).average().orElseThrow();
            }
            lines.add(new Charts.Line(m, x, y, COLORS.get(m), false));
        }
        double chance = Arrays.stream(rep.chance()).average().orElseThrow();
        lines.add(new Charts.Line("chance", new double[] {0, end}, new double[] {chance, chance}, Charts.BLACK, true));
        lines.add(new Charts.Line("end of pretraining", new double[] {rep.config().pretrainSteps(),
                rep.config().pretrainSteps()}, new double[] {0, 1}, Charts.GRID.darker(), true));
        Charts.panel(g, new Rectangle(0, 0, 760, 440), "accuracy on unseen combinations (mean of "
                + rep.runs().size() + " seeds)", "training step (pretraining + finetuning)", "mean accuracy over factors",
                lines, true);
        g.dispose();
        Charts.write(img, file);
    }

    /** g at each evaluation over g_constraint (every seed), and the per-batch g of the first seed. */
    private static void g(Demo.Report rep, Path file) throws IOException {
        BufferedImage img = Charts.canvas(1200, 420);
        Graphics2D g = Charts.graphics(img);
        List<Charts.Line> eval = new ArrayList<>();
        List<Charts.Line> batch = new ArrayList<>();
        double start = rep.config().pretrainSteps();
        double end = start + rep.config().finetuneSteps();
        for (String m : Demo.G_METHODS) {
            for (int s = 0; s < rep.runs().size(); s++) {
                Demo.SeedRun r = rep.runs().get(s);
                List<double[]> c = r.scores().get(m).gCurve();
                double[] x = c.stream().mapToDouble(p -> p[0]).toArray();
                double[] y = c.stream().mapToDouble(p -> p[1] / r.gConstraint()).toArray();
                eval.add(new Charts.Line(s == 0 ? m : null, x, y, COLORS.get(m), false));
            }
            Demo.SeedRun r0 = rep.runs().get(0);
            double[] gs = r0.scores().get(m).stepG().stream().mapToDouble(v -> v / r0.gConstraint()).toArray();
            double[] xs = new double[gs.length];
            for (int i = 0; i < xs.length; i++) {
                xs[i] = start + i + 1;
            }
            batch.add(new Charts.Line(m, xs, Charts.smooth(gs, Math.max(5, gs.length / 40)), COLORS.get(m), false));
        }
        for (List<Charts.Line> l : List.of(eval, batch)) {
            l.add(new Charts.Line("g_constraint", new double[] {start, end}, new double[] {1, 1}, Charts.BLACK, true));
        }
        Charts.panel(g, new Rectangle(0, 0, 600, 420), "g / g_constraint at each evaluation (fixed rows, all seeds)",
                "training step", "g / g_constraint", eval, true);
        Charts.panel(g, new Rectangle(600, 0, 600, 420), "g / g_constraint per batch (smoothed, seed "
                + rep.runs().get(0).seed() + ")", "training step", "g / g_constraint", batch, true);
        g.dispose();
        Charts.write(img, file);
    }

    /** For two seen and two unseen prompts of the first seed: real series and three samples of each method. */
    private static void samples(Demo.Report rep, Path file) throws IOException {
        Demo.SeedRun r = rep.runs().get(0);
        List<Integer> rows = new ArrayList<>();
        for (boolean seen : new boolean[] {true, false}) {
            int k = 0;
            for (int i = 0; i < r.prompts().size() && k < 2; i++) {
                if (r.prompts().get(i).seen() == seen) {
                    rows.add(i);
                    k++;
                }
            }
        }
        List<String> cols = new ArrayList<>(List.of("real"));
        cols.addAll(Demo.METHODS);
        int cw = 260;
        int ch = 170;
        BufferedImage img = Charts.canvas(cw * cols.size(), ch * rows.size() + 10);
        Graphics2D g = Charts.graphics(img);
        for (int ri = 0; ri < rows.size(); ri++) {
            Demo.Prompt p = r.prompts().get(rows.get(ri));
            for (int c = 0; c < cols.size(); c++) {
                float[][] series = c == 0 ? r.real().get(rows.get(ri)) : r.samples().get(cols.get(c)).get(rows.get(ri));
                List<Charts.Line> lines = new ArrayList<>();
                for (int k = 0; k < Math.min(3, series.length); k++) {
                    double[] y = new double[series[k].length];
                    for (int i = 0; i < y.length; i++) {
                        y[i] = series[k][i];
                    }
                    lines.add(Charts.Line.of(null, y, c == 0 ? Charts.GRAY : COLORS.get(cols.get(c))));
                }
                String title = c == 0 ? (p.seen() ? "seen: " : "unseen: ") + p.text() : cols.get(c);
                Charts.panel(g, new Rectangle(c * cw, ri * ch, cw, ch), title, null, null, lines, false);
            }
        }
        g.dispose();
        Charts.write(img, file);
    }
}

package org.text2data.bench;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.geom.Line2D;
import java.awt.geom.Rectangle2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.io.Reader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

import javax.imageio.ImageIO;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;

import org.bytedeco.javacpp.Loader;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.CategoryAxis;
import org.jfree.chart.axis.NumberAxis;
import org.jfree.chart.axis.ValueAxis;
import org.jfree.chart.block.BlockBorder;
import org.jfree.chart.plot.CategoryPlot;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.chart.renderer.category.BarRenderer;
import org.jfree.chart.renderer.category.CategoryItemRendererState;
import org.jfree.chart.renderer.category.StandardBarPainter;
import org.jfree.chart.title.TextTitle;
import org.jfree.chart.ui.HorizontalAlignment;
import org.jfree.chart.ui.RectangleEdge;
import org.jfree.chart.ui.RectangleInsets;
import org.jfree.chart.ui.VerticalAlignment;
import org.jfree.data.category.CategoryDataset;
import org.jfree.data.category.DefaultCategoryDataset;
import org.text2data.LibTorch;

/**
 * Reads the raw results of one {@code bench/compare} run ({@link Interleaved} JSON, or JMH JSON of older runs, and bench_ref.py JSON, one file per
 * side, workload and round) and writes the Markdown table, the JSON summary and the PNG chart.
 *
 * <p>Per side, workload and mode, each round gives one median of the per-call times; the reported value
 * is the median of the rounds' medians and the spread is their range (min to max). A difference smaller
 * than the spread is reported as noise.
 *
 * <p>Usage: {@code Report RAW_DIR OUT_DIR STAMP WORKLOADS ROUNDS JAVA_OPTS PY_OPTS}
 */
public final class Report {

    /** Per-round medians of one measurement. */
    record Series(List<Double> rounds) {
        double median() {
            List<Double> s = new ArrayList<>(rounds);
            Collections.sort(s);
            int n = s.size();
            return n == 0 ? Double.NaN : n % 2 == 1 ? s.get(n / 2) : (s.get(n / 2 - 1) + s.get(n / 2)) / 2;
        }

        double min() {
            return rounds.stream().mapToDouble(Double::doubleValue).min().orElse(Double.NaN);
        }

        double max() {
            return rounds.stream().mapToDouble(Double::doubleValue).max().orElse(Double.NaN);
        }

        /** Range over median, in percent. */
        double spreadPct() {
            return 100 * (max() - min()) / median();
        }
    }

    private final Map<String, Series> series = new LinkedHashMap<>(); // key: side/workload/mode[/engine]
    private final Set<String> engines = new LinkedHashSet<>();
    private final Map<String, JsonObject> pyMeta = new LinkedHashMap<>();

    private Series s(String key) {
        return series.computeIfAbsent(key, k -> new Series(new ArrayList<>()));
    }

    private Series get(String key) {
        return series.getOrDefault(key, new Series(List.of()));
    }

    public static void main(String[] args) throws IOException {
        Path raw = Path.of(args[0]);
        Path out = Path.of(args[1]);
        String stamp = args[2];
        List<String> workloads = List.of(args[3].split(","));
        int rounds = Integer.parseInt(args[4]);
        new Report().run(raw, out, stamp, workloads, rounds, args.length > 5 ? args[5] : "",
                args.length > 6 ? args[6] : "");
    }

    private void run(Path raw, Path out, String stamp, List<String> workloads, int rounds, String javaOpts,
                     String pyOpts) throws IOException {
        for (String w : workloads) {
            for (int r = 1; r <= rounds; r++) {
                readJava(raw.resolve("java-" + w + "-r" + r + ".json"), w);
                readPython(raw.resolve("python-" + w + "-r" + r + ".json"), w);
            }
        }
        Map<String, Object> env = environment(raw, javaOpts, pyOpts, rounds);
        JsonObject json = json(workloads, env, stamp);
        String md = markdown(workloads, env, stamp);
        BufferedImage png = chart(workloads, env);

        Files.createDirectories(out);
        write(out.resolve("compare-" + stamp + ".md"), md);
        write(out.resolve("compare-" + stamp + ".json"), new GsonBuilder().setPrettyPrinting().create().toJson(json));
        ImageIO.write(png, "png", out.resolve("compare-" + stamp + ".png").toFile());
        for (String ext : List.of("md", "json", "png")) {
            Files.copy(out.resolve("compare-" + stamp + "." + ext), out.resolve("latest." + ext),
                    StandardCopyOption.REPLACE_EXISTING);
        }
        System.out.println(md);
        System.out.println("wrote " + out.resolve("compare-" + stamp + ".{md,json,png}") + " and latest.{md,json,png}");
    }

    private static void write(Path p, String s) throws IOException {
        Files.writeString(p, s);
    }

    private static JsonElement parse(Path p) throws IOException {
        try (Reader r = Files.newBufferedReader(p)) {
            return JsonParser.parseReader(r);
        }
    }

    private void readJava(Path p, String w) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        JsonElement root = parse(p);
        if (root.isJsonObject()) { // Interleaved: every variant in one JVM, its block medians
            JsonObject r = root.getAsJsonObject().getAsJsonObject("workloads").getAsJsonObject(w);
            for (Map.Entry<String, JsonElement> v : r.getAsJsonObject("variants").entrySet()) {
                String name = v.getKey(); // runStep/E, plain, update/E, copy
                if (name.contains("/")) {
                    engines.add(name.substring(name.indexOf('/') + 1));
                }
                s("java/" + w + "/" + name).rounds().add(v.getValue().getAsJsonObject().get("median").getAsDouble());
            }
            for (Map.Entry<String, JsonElement> v : r.getAsJsonObject("ratios").entrySet()) {
                String[] parts = v.getKey().split(" ", 2); // "runStep/E over plain", "update/E bandwidth over copy"
                String kind = parts[1].startsWith("bandwidth") ? "update_bandwidth_over_copy" : "runStep_over_plain";
                s("java/" + w + "/" + kind + "/" + parts[0].substring(parts[0].indexOf('/') + 1)).rounds()
                        .add(v.getValue().getAsJsonObject().get("median").getAsDouble());
            }
            return;
        }
        for (JsonElement el : root.getAsJsonArray()) {
            JsonObject b = el.getAsJsonObject();
            String bench = b.get("benchmark").getAsString();
            String mode = bench.substring(bench.lastIndexOf('.') + 1);
            JsonObject params = b.getAsJsonObject("params");
            String engine = params.has("engine") ? params.get("engine").getAsString() : null;
            double median = b.getAsJsonObject("primaryMetric").getAsJsonObject("scorePercentiles").get("50.0").getAsDouble();
            if (engine != null) {
                engines.add(engine);
                s("java/" + w + "/" + mode + "/" + engine).rounds().add(median);
            } else {
                s("java/" + w + "/" + mode).rounds().add(median);
            }
        }
    }

    private void readPython(Path p, String w) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        JsonObject o = parse(p).getAsJsonObject();
        pyMeta.putIfAbsent("meta", o);
        JsonObject r = o.getAsJsonObject("workloads").getAsJsonObject(w);
        for (String mode : List.of("constrained", "baseline", "projection")) {
            s("python/" + w + "/" + mode).rounds().add(r.getAsJsonObject(mode).get("median_ms").getAsDouble());
        }
        pyMeta.putIfAbsent("tensors/" + w, r);
    }

    private Map<String, Object> environment(Path raw, String javaOpts, String pyOpts, int rounds) throws IOException {
        Map<String, Object> env = new LinkedHashMap<>();
        String cpu = "unknown";
        try {
            for (String l : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                if (l.startsWith("model name")) {
                    cpu = l.substring(l.indexOf(':') + 1).trim();
                    break;
                }
            }
        } catch (IOException ignored) {
            // not Linux
        }
        env.put("cpu", cpu);
        env.put("cores", Runtime.getRuntime().availableProcessors());
        env.put("os", System.getProperty("os.name") + " " + System.getProperty("os.version"));
        env.put("jdk", System.getProperty("java.vm.name") + " " + System.getProperty("java.runtime.version"));
        env.put("libtorch", "bytedeco pytorch " + Loader.getVersion("org.bytedeco", "pytorch"));
        env.put("java_torch_threads", LibTorch.torchThreads());
        env.put("java_openblas_threads", LibTorch.blasThreads());
        List<String> blas = new ArrayList<>();
        for (Map.Entry<String, String> e : Loader.getLoadedLibraries().entrySet()) {
            if (e.getValue() != null && e.getValue().matches(".*/lib(openblas|mkl)[^/]*")) {
                blas.add(Path.of(e.getValue()).getFileName().toString());
            }
        }
        env.put("java_blas", String.join(", ", blas) + " (bytedeco openblas preset)");
        JsonObject meta = pyMeta.get("meta");
        if (meta != null) {
            env.put("pytorch", meta.get("torch").getAsString());
            env.put("python_torch_threads", meta.get("threads").getAsInt());
            env.put("python_openblas_threads", meta.get("openblas_threads").isJsonNull() ? "n/a"
                    : meta.get("openblas_threads").getAsString());
        }
        Path blasTxt = raw.resolve("python-blas.txt");
        if (Files.exists(blasTxt)) {
            List<String> loaded = new ArrayList<>();
            for (String l : Files.readAllLines(blasTxt)) {
                if (l.contains("loaded:")) {
                    loaded.add(l.substring(l.indexOf("->") + 2).trim());
                } else if (l.contains("BLAS_INFO")) {
                    env.put("python_blas_info", l.replace("- Build settings:", "").trim());
                }
            }
            env.put("python_blas", String.join(", ", loaded));
        }
        env.put("rounds", rounds);
        env.put("java_options", javaOpts);
        env.put("python_options", pyOpts);
        return env;
    }

    /** The engine a default Constraint (Engine.AUTO) uses: fused where measured, else plain. */
    private String autoEngine() {
        return engines.contains("fused") ? "fused" : "plain";
    }

    private JsonObject json(List<String> workloads, Map<String, Object> env, String stamp) {
        JsonObject root = new JsonObject();
        root.addProperty("generated", Instant.now().toString());
        root.addProperty("run", stamp);
        JsonObject e = new JsonObject();
        env.forEach((k, v) -> {
            if (v instanceof Number n) {
                e.addProperty(k, n);
            } else {
                e.addProperty(k, String.valueOf(v));
            }
        });
        root.add("environment", e);
        root.addProperty("method", "per side, workload and mode: the median of per-call times in each round; "
                + "value = median over rounds, spread = [min, max] over rounds; a difference within the spread is noise");
        JsonObject ws = new JsonObject();
        for (String w : workloads) {
            JsonObject o = entry(w, autoEngine());
            JsonObject byEngine = new JsonObject();
            for (String eng : engines) {
                byEngine.add(eng, entry(w, eng));
            }
            o.add("engines", byEngine);
            ws.add(w, o);
        }
        root.add("workloads", ws);
        return root;
    }

    private JsonObject entry(String w, String engine) {
        JsonObject o = new JsonObject();
        o.addProperty("name", w);
        o.addProperty("engine", engine);
        Series j = get("java/" + w + "/runStep/" + engine);
        Series p = get("python/" + w + "/constrained");
        Series jp = get("java/" + w + "/plain");
        Series pp = get("python/" + w + "/baseline");
        o.addProperty("java_ms", round(j.median()));
        o.addProperty("python_ms", round(p.median()));
        o.addProperty("java_plain_ms", round(jp.median()));
        o.addProperty("python_plain_ms", round(pp.median()));
        // the update runStep makes after its backward passes (Constraint.constrainedStep), and a copy of every parameter, in the same JVM
        o.addProperty("java_update_ms", round(get("java/" + w + "/update/" + engine).median()));
        o.addProperty("java_copy_ms", round(get("java/" + w + "/copy").median()));
        o.addProperty("java_update_bandwidth_over_copy",
                round(get("java/" + w + "/update_bandwidth_over_copy/" + engine).median()));
        o.addProperty("python_projection_ms", round(get("python/" + w + "/projection").median()));
        o.addProperty("java_over_python", round(j.median() / p.median()));
        o.addProperty("java_over_plain", round(j.median() / jp.median()));
        // per round, the median of the per-block ratios (runStep and plain interleaved in one JVM)
        o.addProperty("java_over_plain_same_jvm", round(get("java/" + w + "/runStep_over_plain/" + engine).median()));
        o.addProperty("python_over_plain", round(p.median() / pp.median()));
        o.addProperty("java_faster", verdictFaster(j, p));
        o.addProperty("java_overhead_verdict", verdictOverhead(get("java/" + w + "/runStep_over_plain/" + engine), j, jp));
        JsonObject spread = new JsonObject();
        for (String[] k : new String[][] {{"java_ms", "java/" + w + "/runStep/" + engine}, {"python_ms", "python/" + w + "/constrained"},
                {"java_plain_ms", "java/" + w + "/plain"}, {"python_plain_ms", "python/" + w + "/baseline"},
                {"java_over_plain_same_jvm", "java/" + w + "/runStep_over_plain/" + engine}}) {
            JsonArray a = new JsonArray();
            Series x = get(k[1]);
            a.add(round(x.min()));
            a.add(round(x.max()));
            spread.add(k[0], a);
            JsonArray all = new JsonArray();
            x.rounds().forEach(v -> all.add(round(v)));
            spread.add(k[0] + "_rounds", all);
        }
        o.add("spread", spread);
        return o;
    }

    private static double round(double v) {
        return Double.isFinite(v) ? Math.round(v * 1000) / 1000.0 : Double.NaN;
    }

    /** "yes" when every round of Java beat every round of Python, "no" when the reverse, else "noise". */
    private static String verdictFaster(Series j, Series p) {
        if (j.rounds().isEmpty() || p.rounds().isEmpty()) {
            return "n/a";
        }
        if (j.max() < p.min()) {
            return "yes";
        }
        if (j.min() > p.max()) {
            return "no";
        }
        return j.median() < p.median() ? "yes (within noise)" : "no (within noise)";
    }

    /**
     * Whether runStep <= 1.05 x plain. From the same-JVM ratios ({@code sameJvm}: per round, the median of the
     * per-block runStep / plain) when there are any, the number the table shows: "holds" when their median is at
     * most 1.05, "above 1.05, within noise" when at least their lowest round is, else "fails". Without them, from
     * the separately summarised series, with the rounds' spread of both taken into account.
     */
    private static String verdictOverhead(Series sameJvm, Series step, Series plain) {
        if (!sameJvm.rounds().isEmpty()) {
            return sameJvm.median() <= 1.05 ? "holds" : sameJvm.min() <= 1.05 ? "above 1.05, within noise" : "fails";
        }
        if (step.rounds().isEmpty() || plain.rounds().isEmpty()) {
            return "n/a";
        }
        double ratio = step.median() / plain.median();
        if (ratio <= 1.05) {
            return "holds";
        }
        double spread = Math.max(step.max() - step.min(), plain.max() - plain.min());
        return step.median() - 1.05 * plain.median() <= spread ? "above 1.05, within noise" : "fails";
    }

    private static String ms(Series s) {
        if (s.rounds().isEmpty()) {
            return "n/a";
        }
        return String.format(Locale.ROOT, "%s (%s–%s)", fmt(s.median()), fmt(s.min()), fmt(s.max()));
    }

    /** A ratio and its rounds' range, to 3 decimals (the 1.05 of the overhead verdict must be readable). */
    private static String ratio(Series s) {
        if (s.rounds().isEmpty()) {
            return "n/a";
        }
        return String.format(Locale.ROOT, "%.3f (%.3f–%.3f)", s.median(), s.min(), s.max());
    }

    private static String fmt(double v) {
        return String.format(Locale.ROOT, v >= 100 ? "%.0f" : v >= 10 ? "%.1f" : "%.2f", v);
    }

    private String markdown(List<String> workloads, Map<String, Object> env, String stamp) {
        StringBuilder b = new StringBuilder();
        b.append("### Java (text2data-jvm) against the Python reference, run ").append(stamp).append("\n\n");
        b.append("Milliseconds per step: the median over ").append(env.get("rounds"))
                .append(" rounds of each round's median, and in brackets the lowest and highest round (the spread). "
                        + "A difference inside the spread is noise.\n\n");
        b.append("| workload | engine | Java `runStep` | Python `run_step` | Java / Python | Java faster? "
                + "| Java plain | Java `runStep` / plain | Python plain | Python `run_step` / plain "
                + "| Java update (projection + optimizer) | at x of the copy's bandwidth | Python projection |\n");
        b.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for (String w : workloads) {
            for (String eng : engines) {
                Series j = get("java/" + w + "/runStep/" + eng);
                Series p = get("python/" + w + "/constrained");
                Series jp = get("java/" + w + "/plain");
                Series pp = get("python/" + w + "/baseline");
                Series sameJvm = get("java/" + w + "/runStep_over_plain/" + eng);
                b.append(String.format(Locale.ROOT, "| %s | %s | %s | %s | %.2f | %s | %s | %s (%s) | %s | %.3f | %s | %s | %s |%n",
                        w, eng, ms(j), ms(p), j.median() / p.median(), verdictFaster(j, p), ms(jp),
                        sameJvm.rounds().isEmpty() ? String.format(Locale.ROOT, "%.3f", j.median() / jp.median()) : ratio(sameJvm),
                        verdictOverhead(sameJvm, j, jp), ms(pp), p.median() / pp.median(),
                        ms(get("java/" + w + "/update/" + eng)), ratio(get("java/" + w + "/update_bandwidth_over_copy/" + eng)),
                        ms(get("python/" + w + "/projection"))));
            }
        }
        b.append("\nSpread (highest round minus lowest, over the median) per measurement: ");
        List<String> spreads = new ArrayList<>();
        for (Map.Entry<String, Series> e : series.entrySet()) {
            spreads.add(e.getKey().replace('/', ' ') + String.format(Locale.ROOT, " %.0f%%", e.getValue().spreadPct()));
        }
        b.append(String.join("; ", spreads)).append(".\n\n");
        b.append("Machine: ").append(env.get("cpu")).append(", ").append(env.get("cores")).append(" cores, ")
                .append(env.get("os")).append(". JDK: ").append(env.get("jdk")).append(". libtorch: ")
                .append(env.get("libtorch")).append(", ").append(env.get("java_torch_threads"))
                .append(" intra-op thread(s), OpenBLAS ").append(env.get("java_openblas_threads"))
                .append(" thread(s) (").append(env.get("java_blas")).append("). PyTorch: ")
                .append(env.getOrDefault("pytorch", "?")).append(", ").append(env.getOrDefault("python_torch_threads", "?"))
                .append(" thread(s), OpenBLAS ").append(env.getOrDefault("python_openblas_threads", "?"))
                .append(" thread(s) (").append(env.getOrDefault("python_blas_info", "")).append("; loaded: ")
                .append(env.getOrDefault("python_blas", "?")).append(").\n\n");
        b.append("Options: Java `Interleaved ").append(env.get("java_options"))
                .append("` (runStep, plain, update and copy alternating in one JVM; Java `runStep` / plain is the median of "
                        + "the per-block ratios; an engine `E+concurrent` is E with runStep's two passes at the same time, "
                        + "`Constraint.setConcurrentPasses`); bench_ref.py `")
                .append(env.get("python_options")).append("`.\n");
        return b.toString();
    }

    // ---------------------------------------------------------------- chart (JFreeChart)

    private static final Color[] COLORS = {new Color(0x1f77b4), new Color(0xaec7e8), new Color(0xd62728), new Color(0xff9896),
            new Color(0x2ca02c)};

    private BufferedImage chart(List<String> workloads, Map<String, Object> env) {
        int cols = 2;
        int rows = (workloads.size() + 1) / 2;
        int pw = 620;
        int ph = 330;
        int top = 70;
        int width = cols * pw;
        int height = top + rows * ph + 10;
        BufferedImage img = new BufferedImage(width, height, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, width, height);
        String eng = autoEngine();
        g.setColor(Color.BLACK);
        g.setFont(new Font(Font.SANS_SERIF, Font.BOLD, 18));
        g.drawString("text2data: Java runStep vs Python run_step, ms per step (lower is better)", 20, 28);
        g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 13));
        g.drawString("bars: median of round medians; whiskers: lowest to highest round. Java engine: " + eng
                + ". " + env.get("cores") + " cores, " + env.get("rounds") + " rounds.", 20, 50);
        String concurrent = eng + "+concurrent"; // the same engine with concurrent passes, where it was timed
        boolean withConcurrent = engines.contains(concurrent);
        List<String> labels = new ArrayList<>(List.of("Java runStep", "Java plain", "Python run_step", "Python plain"));
        List<Color> colors = new ArrayList<>(List.of(COLORS).subList(0, 4));
        if (withConcurrent) {
            labels.add(1, "Java runStep, concurrent passes");
            colors.add(1, COLORS[4]);
        }
        for (int i = 0; i < workloads.size(); i++) {
            String w = workloads.get(i);
            Series step = get("java/" + w + "/runStep/" + eng);
            Series plain = get("java/" + w + "/plain");
            Series py = get("python/" + w + "/constrained");
            Series pyPlain = get("python/" + w + "/baseline");
            Series sameJvm = get("java/" + w + "/runStep_over_plain/" + eng);
            List<Series> bars = new ArrayList<>(List.of(step, plain, py, pyPlain));
            String subtitle = "";
            if (!step.rounds().isEmpty() && !py.rounds().isEmpty()) {
                subtitle = String.format(Locale.ROOT, "runStep/Python %.2f, /plain %.2f", step.median() / py.median(),
                        sameJvm.rounds().isEmpty() ? step.median() / plain.median() : sameJvm.median());
                if (withConcurrent) {
                    Series c = get("java/" + w + "/runStep/" + concurrent);
                    bars.add(1, c);
                    subtitle += String.format(Locale.ROOT, "  |  concurrent %.2f, %.2f",
                            c.median() / py.median(), get("java/" + w + "/runStep_over_plain/" + concurrent).median());
                }
                subtitle += String.format(Locale.ROOT, "  |  Python run_step/plain %.2f", py.median() / pyPlain.median());
            }
            panel(w, bars.toArray(new Series[0]), labels.toArray(new String[0]), colors.toArray(new Color[0]), subtitle)
                    .draw(g, new Rectangle2D.Double((i % cols) * pw, top + (i / cols) * ph, pw, ph));
        }
        g.dispose();
        return img;
    }

    /** One workload: a bar per measurement (median), whiskers from the lowest to the highest round. */
    private static JFreeChart panel(String title, Series[] bars, String[] labels, Color[] colors, String subtitle) {
        DefaultCategoryDataset data = new DefaultCategoryDataset();
        for (int k = 0; k < bars.length; k++) {
            data.addValue(bars[k].rounds().isEmpty() ? null : bars[k].median(), labels[k], "");
        }
        JFreeChart chart = ChartFactory.createBarChart(null, null, "ms", data, PlotOrientation.VERTICAL, true, false, false);
        chart.setTitle(new TextTitle(title, new Font(Font.SANS_SERIF, Font.BOLD, 15)));
        chart.getTitle().setHorizontalAlignment(HorizontalAlignment.LEFT);
        chart.setBackgroundPaint(Color.WHITE);
        chart.setPadding(new RectangleInsets(4, 10, 4, 16));
        chart.getLegend().setFrame(BlockBorder.NONE);
        chart.getLegend().setItemFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        if (!subtitle.isEmpty()) {
            chart.addSubtitle(new TextTitle(subtitle, new Font(Font.SANS_SERIF, Font.PLAIN, 12),
                    Color.BLACK, RectangleEdge.BOTTOM, HorizontalAlignment.CENTER, VerticalAlignment.CENTER,
                    new RectangleInsets(2, 0, 0, 0)));
        }
        CategoryPlot plot = chart.getCategoryPlot();
        plot.setBackgroundPaint(Color.WHITE);
        plot.setOutlineVisible(false);
        plot.setRangeGridlinePaint(new Color(0xe0e0e0));
        plot.setRangeGridlineStroke(new BasicStroke(1f));
        NumberAxis axis = (NumberAxis) plot.getRangeAxis();
        double max = 0;
        for (Series s : bars) {
            if (!s.rounds().isEmpty()) {
                max = Math.max(max, s.max());
            }
        }
        axis.setRange(0, max > 0 ? max * 1.15 : 1); // room for the whiskers and the labels above them
        axis.setTickLabelFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        plot.getDomainAxis().setCategoryMargin(0);
        WhiskerBarRenderer r = new WhiskerBarRenderer(bars);
        for (int k = 0; k < bars.length; k++) {
            r.setSeriesPaint(k, colors[k]);
        }
        plot.setRenderer(r);
        return chart;
    }

    /** JFreeChart's bars with the rounds' range as a whisker and the median written above it. */
    private static final class WhiskerBarRenderer extends BarRenderer {
        private final Series[] bars;

        WhiskerBarRenderer(Series[] bars) {
            this.bars = bars;
            setBarPainter(new StandardBarPainter());
            setShadowVisible(false);
            setDrawBarOutline(false);
            setItemMargin(0.25);
        }

        @Override
        public void drawItem(Graphics2D g2, CategoryItemRendererState state, Rectangle2D area, CategoryPlot plot,
                             CategoryAxis domainAxis, ValueAxis rangeAxis, CategoryDataset dataset, int row, int column,
                             int pass) {
            super.drawItem(g2, state, area, plot, domainAxis, rangeAxis, dataset, row, column, pass);
            Series s = bars[row];
            if (pass != 0 || s.rounds().isEmpty()) {
                return;
            }
            double x = calculateBarW0(plot, plot.getOrientation(), area, domainAxis, state, row, column)
                    + state.getBarWidth() / 2;
            double lo = rangeAxis.valueToJava2D(s.min(), area, plot.getRangeAxisEdge());
            double hi = rangeAxis.valueToJava2D(s.max(), area, plot.getRangeAxisEdge());
            double top = Math.min(hi, rangeAxis.valueToJava2D(s.median(), area, plot.getRangeAxisEdge()));
            g2.setPaint(Color.BLACK);
            g2.setStroke(new BasicStroke(1.5f));
            g2.draw(new Line2D.Double(x, lo, x, hi));
            g2.draw(new Line2D.Double(x - 6, lo, x + 6, lo));
            g2.draw(new Line2D.Double(x - 6, hi, x + 6, hi));
            g2.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
            String v = fmt(s.median());
            g2.drawString(v, (float) (x - g2.getFontMetrics().stringWidth(v) / 2.0), (float) (top - 5));
        }
    }
}

package org.text2data.demo;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.Rectangle;
import java.awt.RenderingHints;
import java.awt.geom.Rectangle2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

import javax.imageio.ImageIO;

import org.jfree.chart.ChartFactory;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.NumberAxis;
import org.jfree.chart.block.BlockBorder;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.renderer.xy.XYLineAndShapeRenderer;
import org.jfree.chart.title.TextTitle;
import org.jfree.chart.ui.RectangleInsets;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;

/**
 * The demo's PNGs: line charts drawn by JFreeChart (headless) into panels of one image. JFreeChart stays on
 * the demo's side: nothing of the library's API, engines or training code uses it.
 */
final class Charts {
    static final Color BLUE = new Color(31, 119, 180);
    static final Color ORANGE = new Color(255, 127, 14);
    static final Color GREEN = new Color(44, 160, 44);
    static final Color GRAY = new Color(120, 120, 120);
    static final Color BLACK = Color.BLACK;
    static final Color GRID = new Color(225, 225, 225);

    /** One line: y over x (x null: 0, 1, 2, ...). */
    record Line(String label, double[] x, double[] y, Color color, boolean dashed) {
        static Line of(String label, double[] y, Color color) {
            return new Line(label, null, y, color, false);
        }
    }

    private Charts() {
    }

    static BufferedImage canvas(int w, int h) {
        BufferedImage img = new BufferedImage(w, h, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, w, h);
        g.dispose();
        return img;
    }

    static Graphics2D graphics(BufferedImage img) {
        Graphics2D g = img.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
        g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        return g;
    }

    /**
     * A chart with a title, axis labels, ticks and a legend, drawn by JFreeChart into {@code r} of
     * {@code g}. Non-finite values break a line; lines without a label stay out of the legend.
     */
    static void panel(Graphics2D g, Rectangle r, String title, String xLabel, String yLabel, List<Line> lines,
                      boolean legend) {
        XYSeriesCollection data = new XYSeriesCollection();
        for (int k = 0; k < lines.size(); k++) {
            Line l = lines.get(k);
            XYSeries s = new XYSeries(l.label() != null ? l.label() : "#" + k, false, true);
            for (int i = 0; i < l.y().length; i++) {
                double y = l.y()[i];
                s.add(l.x() == null ? i : l.x()[i], Double.isFinite(y) ? Double.valueOf(y) : null);
            }
            data.addSeries(s);
        }
        JFreeChart chart = ChartFactory.createXYLineChart(null, xLabel, yLabel, data, PlotOrientation.VERTICAL,
                legend, false, false);
        chart.setAntiAlias(true);
        chart.setBackgroundPaint(Color.WHITE);
        chart.setPadding(new RectangleInsets(2, 2, 2, 6));
        if (title != null) {
            chart.setTitle(new TextTitle(title, new Font(Font.SANS_SERIF, Font.BOLD, 13)));
        }
        XYPlot plot = chart.getXYPlot();
        plot.setBackgroundPaint(Color.WHITE);
        plot.setOutlinePaint(BLACK);
        plot.setDomainGridlinePaint(GRID);
        plot.setRangeGridlinePaint(GRID);
        plot.setDomainGridlineStroke(new BasicStroke(1f));
        plot.setRangeGridlineStroke(new BasicStroke(1f));
        plot.setAxisOffset(RectangleInsets.ZERO_INSETS);
        Font tickFont = new Font(Font.SANS_SERIF, Font.PLAIN, 10);
        Font labelFont = new Font(Font.SANS_SERIF, Font.PLAIN, 11);
        for (NumberAxis axis : new NumberAxis[] {(NumberAxis) plot.getDomainAxis(), (NumberAxis) plot.getRangeAxis()}) {
            axis.setAutoRangeIncludesZero(false);
            axis.setTickLabelFont(tickFont);
            axis.setLabelFont(labelFont);
            axis.setTickLabelPaint(BLACK);
        }
        double lo = Double.POSITIVE_INFINITY;
        double hi = Double.NEGATIVE_INFINITY;
        for (Line l : lines) {
            for (double y : l.y()) {
                if (Double.isFinite(y)) {
                    lo = Math.min(lo, y);
                    hi = Math.max(hi, y);
                }
            }
        }
        if (lo == hi) { // a flat line (or an empty panel): a unit range around it, not 1e-9 ticks
            plot.getRangeAxis().setRange(lo - 1, hi + 1);
        }
        ((NumberAxis) plot.getDomainAxis()).setLowerMargin(0);
        ((NumberAxis) plot.getDomainAxis()).setUpperMargin(0);
        XYLineAndShapeRenderer renderer = new XYLineAndShapeRenderer(true, false);
        for (int k = 0; k < lines.size(); k++) {
            Line l = lines.get(k);
            renderer.setSeriesPaint(k, l.color());
            renderer.setSeriesStroke(k, l.dashed()
                    ? new BasicStroke(1.5f, BasicStroke.CAP_BUTT, BasicStroke.JOIN_MITER, 10, new float[] {6, 4}, 0)
                    : new BasicStroke(1.4f));
            renderer.setSeriesVisibleInLegend(k, l.label() != null);
        }
        renderer.setDrawSeriesLineAsPath(false);
        plot.setRenderer(renderer);
        if (legend && chart.getLegend() != null) {
            chart.getLegend().setItemFont(labelFont);
            chart.getLegend().setFrame(BlockBorder.NONE);
        }
        chart.draw(g, new Rectangle2D.Double(r.x, r.y, r.width, r.height));
    }

    /** Writes a PNG atomically (temporary file, then rename). */
    static void write(BufferedImage img, Path file) throws IOException {
        org.text2data.AtomicFile.write(file, tmp -> ImageIO.write(img, "png", tmp.toFile()));
    }

    /** Moving average over {@code w} points (shorter at the start). */
    static double[] smooth(double[] y, int w) {
        double[] out = new double[y.length];
        double s = 0;
        for (int i = 0; i < y.length; i++) {
            s += y[i];
            if (i >= w) {
                s -= y[i - w];
            }
            out[i] = s / Math.min(i + 1, w);
        }
        return out;
    }
}

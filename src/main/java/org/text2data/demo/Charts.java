package org.text2data.demo;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.FontMetrics;
import java.awt.Graphics2D;
import java.awt.Rectangle;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;

import javax.imageio.ImageIO;

/** Minimal line charts drawn with Java2D (headless), for the demo's PNGs. */
final class Charts {
    static final Color BLUE = new Color(31, 119, 180);
    static final Color ORANGE = new Color(255, 127, 14);
    static final Color GREEN = new Color(44, 160, 44);
    static final Color GRAY = new Color(120, 120, 120);
    static final Color BLACK = Color.BLACK;

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

    /** A framed panel with a title, axis labels, ticks and a legend, in {@code r}. */
    static void panel(Graphics2D g, Rectangle r, String title, String xLabel, String yLabel, List<Line> lines,
                      boolean legend) {
        double xmin = Double.POSITIVE_INFINITY;
        double xmax = Double.NEGATIVE_INFINITY;
        double ymin = Double.POSITIVE_INFINITY;
        double ymax = Double.NEGATIVE_INFINITY;
        for (Line l : lines) {
            for (int i = 0; i < l.y().length; i++) {
                double x = l.x() == null ? i : l.x()[i];
                double y = l.y()[i];
                if (!Double.isFinite(y)) {
                    continue;
                }
                xmin = Math.min(xmin, x);
                xmax = Math.max(xmax, x);
                ymin = Math.min(ymin, y);
                ymax = Math.max(ymax, y);
            }
        }
        if (!(xmax > xmin)) {
            xmax = xmin + 1;
        }
        if (!(ymax > ymin)) {
            ymax = ymin + 1;
        }
        double pad = (ymax - ymin) * 0.05;
        ymin -= pad;
        ymax += pad;
        int left = r.x + (yLabel == null ? 34 : 58);
        int right = r.x + r.width - 8;
        int top = r.y + (title == null ? 8 : 24);
        int bottom = r.y + r.height - (xLabel == null ? 20 : 36);
        g.setColor(BLACK);
        FontMetrics fm = g.getFontMetrics();
        if (title != null) {
            g.setFont(g.getFont().deriveFont(Font.BOLD));
            g.drawString(fit(title, fm, r.width - 8), r.x + 4, r.y + 16);
            g.setFont(g.getFont().deriveFont(Font.PLAIN));
        }
        g.setColor(new Color(235, 235, 235));
        for (int k = 0; k <= 4; k++) {
            int yy = bottom - (bottom - top) * k / 4;
            g.drawLine(left, yy, right, yy);
        }
        g.setColor(BLACK);
        g.drawRect(left, top, right - left, bottom - top);
        g.setFont(g.getFont().deriveFont(10f));
        fm = g.getFontMetrics();
        for (int k = 0; k <= 4; k++) {
            double v = ymin + (ymax - ymin) * k / 4;
            int yy = bottom - (bottom - top) * k / 4;
            String s = tick(v);
            g.drawString(s, left - 4 - fm.stringWidth(s), yy + 4);
        }
        for (int k = 0; k <= 4; k++) {
            double v = xmin + (xmax - xmin) * k / 4;
            int xx = left + (right - left) * k / 4;
            String s = tick(v);
            g.drawString(s, xx - fm.stringWidth(s) / 2, bottom + 13);
        }
        g.setFont(g.getFont().deriveFont(11f));
        fm = g.getFontMetrics();
        if (xLabel != null) {
            g.drawString(xLabel, (left + right - fm.stringWidth(xLabel)) / 2, r.y + r.height - 6);
        }
        if (yLabel != null) {
            Graphics2D gv = (Graphics2D) g.create();
            gv.rotate(-Math.PI / 2);
            gv.drawString(yLabel, -(top + bottom + fm.stringWidth(yLabel)) / 2, r.x + 12);
            gv.dispose();
        }
        java.awt.Shape clip = g.getClip();
        g.clipRect(left + 1, top + 1, right - left - 1, bottom - top - 1);
        for (Line l : lines) {
            g.setColor(l.color());
            g.setStroke(l.dashed() ? new BasicStroke(1.5f, BasicStroke.CAP_BUTT, BasicStroke.JOIN_MITER, 10,
                    new float[] {6, 4}, 0) : new BasicStroke(1.4f));
            int px = Integer.MIN_VALUE;
            int py = 0;
            for (int i = 0; i < l.y().length; i++) {
                double y = l.y()[i];
                if (!Double.isFinite(y)) {
                    px = Integer.MIN_VALUE;
                    continue;
                }
                double x = l.x() == null ? i : l.x()[i];
                int xx = left + (int) Math.round((x - xmin) / (xmax - xmin) * (right - left));
                int yy = bottom - (int) Math.round((y - ymin) / (ymax - ymin) * (bottom - top));
                if (px != Integer.MIN_VALUE) {
                    g.drawLine(px, py, xx, yy);
                }
                px = xx;
                py = yy;
            }
        }
        g.setClip(clip);
        g.setStroke(new BasicStroke(1));
        if (legend) {
            int ly = top + 6;
            for (Line l : lines) {
                if (l.label() == null) {
                    continue;
                }
                g.setColor(l.color());
                g.fillRect(right - 150, ly, 14, 3);
                g.setColor(BLACK);
                g.drawString(l.label(), right - 132, ly + 6);
                ly += 15;
            }
        }
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

    private static String tick(double v) {
        double a = Math.abs(v);
        if (a != 0 && (a < 0.01 || a >= 10000)) {
            return String.format(Locale.ROOT, "%.1e", v);
        }
        return a >= 100 ? String.format(Locale.ROOT, "%.0f", v) : String.format(Locale.ROOT, "%.2f", v);
    }

    static String fit(String s, FontMetrics fm, int width) {
        if (fm.stringWidth(s) <= width) {
            return s;
        }
        while (s.length() > 3 && fm.stringWidth(s + "...") > width) {
            s = s.substring(0, s.length() - 1);
        }
        return s + "...";
    }
}

package org.text2data.cli;

import java.io.PrintStream;
import java.util.Locale;

/**
 * A one-line progress bar on stderr: {@code [=====>    ] 120/400  g 1.0312  f 0.8811  12.1 it/s  ETA 0:23}.
 * On a terminal it redraws in place; elsewhere (logs, CI) it prints a line every tenth of the way.
 */
final class ProgressBar {
    private final PrintStream out;
    private final String label;
    private final long total;
    private final boolean interactive;
    private final long start = System.nanoTime();
    private long lastDraw;
    private int lastDecile = -1;

    ProgressBar(String label, long total) {
        this(System.err, label, total, System.console() != null);
    }

    ProgressBar(PrintStream out, String label, long total, boolean interactive) {
        this.out = out;
        this.label = label;
        this.total = Math.max(1, total);
        this.interactive = interactive;
    }

    /** Shows that {@code done} of {@code total} are finished; {@code info} is appended (losses...). */
    void update(long done, String info) {
        long now = System.nanoTime();
        boolean last = done >= total;
        if (interactive) {
            if (!last && now - lastDraw < 100_000_000L) {
                return;
            }
            lastDraw = now;
            out.print("\r" + line(done, info, now) + "\u001b[K");
            if (last) {
                out.println();
            }
        } else {
            int decile = (int) (10 * done / total);
            if (decile != lastDecile || last) {
                lastDecile = decile;
                out.println(line(done, info, now));
            }
        }
        out.flush();
    }

    private String line(long done, String info, long now) {
        int width = 24;
        int filled = (int) (width * done / total);
        StringBuilder bar = new StringBuilder("[");
        for (int i = 0; i < width; i++) {
            bar.append(i < filled ? '=' : i == filled ? '>' : ' ');
        }
        bar.append(']');
        double secs = (now - start) / 1e9;
        double rate = done / Math.max(secs, 1e-9);
        String eta = done == 0 ? "?" : clock((total - done) / Math.max(rate, 1e-9));
        return String.format(Locale.ROOT, "%s %s %d/%d  %s  %.1f it/s  %s %s", label, bar, done, total,
                info, rate, done >= total ? "took" : "ETA", done >= total ? clock(secs) : eta);
    }

    static String clock(double seconds) {
        long s = Math.round(seconds);
        return s >= 3600 ? String.format("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
                : String.format("%d:%02d", s / 60, s % 60);
    }
}

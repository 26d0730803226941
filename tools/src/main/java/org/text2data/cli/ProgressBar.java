package org.text2data.cli;

import java.io.PrintStream;
import java.text.DecimalFormat;

import me.tongfei.progressbar.ConsoleProgressBarConsumer;
import me.tongfei.progressbar.DelegatingProgressBarConsumer;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

/**
 * The CLI's progress bar, on stderr, drawn by me.tongfei:progressbar:
 * {@code finetune 30% [=======>      ] 120/400 it (0:00:09 / 0:00:23) 12.1 it/s g 1.0312  f 0.8811}
 * (done/total, elapsed / remaining, rate, the caller's info).
 * On a terminal it redraws in place; elsewhere (logs, CI) it prints a line every tenth of the way.
 */
final class ProgressBar {
    private final me.tongfei.progressbar.ProgressBar bar;
    private final long total;
    private final boolean interactive;
    private int lastDecile = -1;
    /** Set by update() for the next rendering to print; taken once (the timer thread and refresh() both render). */
    private final java.util.concurrent.atomic.AtomicBoolean printNext = new java.util.concurrent.atomic.AtomicBoolean();
    private boolean closed;

    ProgressBar(String label, long total) {
        this(System.err, label, total, System.console() != null);
    }

    ProgressBar(PrintStream out, String label, long total, boolean interactive) {
        this.total = Math.max(1, total);
        this.interactive = interactive;
        ProgressBarBuilder b = new ProgressBarBuilder().setTaskName(label).setInitialMax(this.total)
                .setStyle(ProgressBarStyle.ASCII).setUnit(" it", 1).showSpeed(new DecimalFormat("0.0"))
                .setUpdateIntervalMillis(100).setMaxRenderedLength(120);
        if (interactive) {
            b.setConsumer(new ConsoleProgressBarConsumer(out));
        } else {
            // a line at each tenth: the bar renders on its timer thread, this prints only what update() asked for
            b.setConsumer(new DelegatingProgressBarConsumer(line -> {
                if (printNext.compareAndSet(true, false)) {
                    out.println(line.stripTrailing());
                    out.flush();
                }
            }, 120));
        }
        bar = b.build();
    }

    /** Shows that {@code done} of {@code total} are finished; {@code info} is appended (losses...). */
    void update(long done, String info) {
        if (closed) {
            return;
        }
        bar.setExtraMessage(" " + info);
        bar.stepTo(Math.min(done, total));
        boolean last = done >= total;
        if (!interactive) {
            int decile = (int) (10 * Math.min(done, total) / total);
            if (decile != lastDecile && !last) {
                lastDecile = decile;
                printNext.set(true);
                bar.refresh();
            }
        }
        if (last) {
            closed = true;
            printNext.set(true); // the final line, rendered by close()
            bar.close();
        }
    }
}

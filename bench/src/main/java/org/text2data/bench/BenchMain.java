package org.text2data.bench;

import java.util.ArrayList;
import java.util.List;

import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.CommandLineOptions;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.text2data.LibTorch;
import org.text2data.engine.Engines;

/**
 * JMH's command line, with one addition: unless {@code -p engine=...} is given, the engine parameter
 * is set to the engines that exist here ({@code plain}, and {@code fused} where its library loads), so
 * the suite runs every available engine and skips the others.
 */
public final class BenchMain {
    private BenchMain() {
    }

    public static void main(String[] args) throws Exception {
        CommandLineOptions cmd = new CommandLineOptions(args);
        if (cmd.shouldHelp() || cmd.shouldList() || cmd.shouldListWithParams() || cmd.shouldListProfilers()
                || cmd.shouldListResultFormats()) {
            org.openjdk.jmh.Main.main(args);
            return;
        }
        ChainedOptionsBuilder b = new OptionsBuilder().parent(cmd);
        if (cmd.getParameter("engine").hasValue()) {
            new Runner(b.build()).run();
            return;
        }
        List<String> engines = new ArrayList<>(List.of("plain"));
        if (Engines.fusedAvailable()) {
            engines.add("fused");
        } else {
            System.out.println("# fused engine skipped: " + Engines.fusedUnavailableReason());
        }
        System.out.println("# engines: " + engines + "; libtorch threads " + LibTorch.torchThreads()
                + ", OpenBLAS threads " + LibTorch.blasThreads() + " (-1: left as it was)");
        b.param("engine", engines.toArray(new String[0]));
        new Runner(b.build()).run();
    }
}

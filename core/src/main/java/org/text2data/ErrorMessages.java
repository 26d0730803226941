package org.text2data;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Turns libtorch's error messages into one line a user can read. libtorch's {@code c10::Error} appends the C++
 * stack ({@code "Exception raised from ... (most recent call first):\nframe #0: ..."}) to its message, and the
 * TorchScript interpreter puts the real cause after a TorchScript traceback ({@code "The following operation
 * failed in the TorchScript interpreter. ... RuntimeError: <cause>"}). {@link #clean} keeps the cause and drops
 * the rest; the full message stays in the exception for {@code --verbose}.
 */
public final class ErrorMessages {
    private ErrorMessages() {
    }

    private static final Pattern CAUSE = Pattern.compile("^\\s*(?:[\\w.]+(?:Error|Exception)):\\s*(.+)$", Pattern.MULTILINE);
    private static final String INTERPRETER = "The following operation failed in the TorchScript interpreter.";

    /**
     * One line naming the cause of {@code message}, without C++ stack frames or TorchScript tracebacks.
     *
     * @param message a libtorch error message; may be null
     * @return the cause on one line, prefixed "in the model's TorchScript code: " when it comes from a
     *         TorchScript traceback, or {@code "(no message)"} if there is none
     */
    public static String clean(String message) {
        if (message == null || message.isBlank()) {
            return "(no message)";
        }
        String m = message;
        int raised = m.indexOf("Exception raised from ");
        if (raised >= 0) {
            m = m.substring(0, raised);
        }
        int frames = m.indexOf("\nframe #0:");
        if (frames >= 0) {
            m = m.substring(0, frames);
        }
        if (m.contains(INTERPRETER) || m.contains("Traceback of TorchScript")) {
            String cause = null;
            Matcher c = CAUSE.matcher(m);
            while (c.find()) {
                cause = c.group(1).trim(); // the last one: the error the interpreter met
            }
            if (cause != null) {
                return "in the model's TorchScript code: " + cause;
            }
        }
        StringBuilder out = new StringBuilder();
        for (String line : m.split("\n")) {
            String t = line.strip();
            if (!t.isEmpty()) {
                out.append(out.isEmpty() ? "" : " ").append(t);
            }
        }
        return out.isEmpty() ? "(no message)" : out.toString();
    }

    /**
     * {@link #clean} of the throwable's message, or its class name when it has none.
     *
     * @param t the exception or error
     * @return its cleaned message, or its simple class name if the message is null or blank
     */
    public static String of(Throwable t) {
        String m = t.getMessage();
        if (m == null || m.isBlank()) {
            return t.getClass().getSimpleName();
        }
        return clean(m);
    }
}

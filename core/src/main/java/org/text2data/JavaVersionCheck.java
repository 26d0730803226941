package org.text2data;

/**
 * Says clearly when the running JVM is too old for this library. The library's classes are compiled for
 * Java 25 (class file version 69): an older JVM cannot load any of them and fails with the JVM's own
 * {@code UnsupportedClassVersionError} on the first one. This class, and {@link Preload}, are compiled for
 * Java 8 (pom.xml, execution {@code old-jvm-entry-points}) so that they load on any JVM and can check first.
 */
public final class JavaVersionCheck {
    /** The lowest Java feature release the library runs on. */
    public static final int REQUIRED = 25;

    private JavaVersionCheck() {
    }

    /**
     * Throws an {@link UnsupportedClassVersionError} with a message that says what to install when the
     * running JVM is older than {@link #REQUIRED}.
     */
    public static void require() {
        String spec = System.getProperty("java.specification.version", "0");
        int major;
        try {
            major = Integer.parseInt(spec.startsWith("1.") ? spec.substring(2) : spec);
        } catch (NumberFormatException e) {
            return; // an unknown scheme: let the JVM decide
        }
        if (major < REQUIRED) {
            throw new UnsupportedClassVersionError("text2data needs Java " + REQUIRED + " or newer (its classes are"
                    + " class file version " + (44 + REQUIRED) + "); this JVM is Java " + spec + " ("
                    + System.getProperty("java.home") + "). Run it on a JDK " + REQUIRED + ", e.g. Eclipse Temurin "
                    + REQUIRED + " (https://adoptium.net) or your distribution's openjdk-" + REQUIRED + "-jdk.");
        }
    }
}

package org.text2data;

/**
 * A loss or gradient was NaN or infinite. Thrown before the base optimizer steps, so parameters and
 * optimizer state are unchanged.
 */
public class NonFiniteException extends ArithmeticException {
    /**
     * Creates the exception.
     *
     * @param message what was not finite, and where
     */
    public NonFiniteException(String message) {
        super(message);
    }
}

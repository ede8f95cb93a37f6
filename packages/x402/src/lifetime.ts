/**
 * Whether `seconds` is a receipt lifetime a route may allow (`maxTimeoutSeconds`): a positive integer, and a safe one.
 * Not exported by the package.
 */
export function isLifetime(seconds: number): boolean {
  return Number.isSafeInteger(seconds) && seconds >= 1;
}

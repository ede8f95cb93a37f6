/** Runs `node <script> ...args`, SIGKILLs it once it has printed more than `lines` lines; its output once it exited. */
export declare function killAfterLines(
  script: string,
  args: readonly string[],
  lines: number,
): Promise<{ lines: string[]; stderr: string }>;

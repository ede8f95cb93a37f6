/** A TCP load balancer in front of hub processes (see balancer.mjs). */
export interface Balancer {
  /** ws://127.0.0.1:port/ */
  readonly url: string;
  /** The backend port each connection went to, in order. */
  readonly placed: number[];
  /** Take a backend out (as a failed health check would): its open connections are cut, new ones go elsewhere. */
  drop(port: number): void;
  /** Put a dropped backend back in rotation. */
  restore(port: number): void;
  close(): Promise<void>;
}
export declare function startBalancer(ports: readonly number[]): Promise<Balancer>;

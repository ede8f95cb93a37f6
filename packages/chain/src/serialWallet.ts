import { Wallet, type Provider, type TransactionRequest, type TransactionResponse } from 'ethers';

/**
 * A Wallet whose transactions are sent one after another: concurrent callers sharing an account (a hub challenging
 * several channels at once, parallel test steps) would otherwise read the same pending nonce. Each send waits until
 * the previous one was broadcast (or failed before that, e.g. at gas estimation, which consumes no nonce).
 */
export class SerialWallet extends Wallet {
  #queue: Promise<unknown> = Promise.resolve();

  constructor(privateKey: string, provider: Provider) {
    super(privateKey, provider);
  }

  override sendTransaction(tx: TransactionRequest): Promise<TransactionResponse> {
    const run = this.#queue.then(() => super.sendTransaction(tx));
    this.#queue = run.catch(() => undefined);
    return run;
  }
}

export interface ClientBundle {
  code: string;
  bytes: number;
  gzipBytes: number;
  nodeImports: { module: string; importer: string }[];
  inputs: { file: string; bytes: number }[];
}
export declare function bundleClient(o?: { contents?: string }): Promise<ClientBundle>;

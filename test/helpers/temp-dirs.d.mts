export declare function tempDirs(prefix: string): () => string;

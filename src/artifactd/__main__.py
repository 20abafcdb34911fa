from artifactd.cli import main

main()

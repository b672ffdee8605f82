from .node._cli import main

main()
